package dataplane

import (
	"context"
	"fmt"
	"iter"
	"maps"
	"slices"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
	"sigs.k8s.io/knftables"
)

// SkeletonWriter is an ElementReloader that also writes chains, rules and
// set definitions, so that no sync needs nft (see doc.go). Each method is
// one atomic transaction. An error wrapping ErrEncode means the ruleset
// holds something the encoder does not know and nothing was sent: the
// caller can use nft instead.
type SkeletonWriter interface {
	ElementReloader
	// Rewrite replaces the table, whatever it holds, with desired: its
	// chains, rules, sets and maps and all their elements.
	Rewrite(ctx context.Context, desired *Ruleset) error
	// ChangeSkeleton adds the chains newChains names (with desired's
	// rules), then makes the element changes, then deletes deadChains: a
	// partial sync that also adds or removes chains. The table's other
	// chains and its sets stay, and so do remembered ClientIP choices.
	ChangeSkeleton(ctx context.Context, desired *Ruleset, newChains []string, changes []ElementChange, deadChains []string) error
}

// tableComment is the comment on herald's table.
const tableComment = "herald service load balancing"

// Rewrite implements SkeletonWriter.
func (n *NetlinkReloader) Rewrite(_ context.Context, desired *Ruleset) error {
	b, err := fullBatch(desired)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrReload, err)
	}
	return n.run(b)
}

// fullBatch writes the table as fullTransaction does, in the same order, so
// that the kernel numbers handles and anonymous sets as for nft's.
func fullBatch(desired *Ruleset) (*nlBatch, error) {
	b := newBatch()
	if err := b.addTable(""); err != nil {
		return nil, err
	}
	if err := b.deleteTable(); err != nil {
		return nil, err
	}
	if err := b.addTable(tableComment); err != nil {
		return nil, err
	}
	for _, name := range sortedKeys(desired.Chains) {
		if err := b.addChain(&desired.Chains[name].Chain); err != nil {
			return nil, err
		}
	}
	for _, name := range sortedKeys(desired.Sets) {
		s := desired.Sets[name]
		if s.Comment != nil || s.Timeout != nil || s.Size != nil || s.Policy != nil {
			return nil, fmt.Errorf("%w: set %s: options the encoder does not write", ErrEncode, name)
		}
		if err := b.addSet(name, s.TypeOf, s.Flags, nil, nil); err != nil {
			return nil, err
		}
	}
	for _, name := range sortedKeys(desired.Maps) {
		m := desired.Maps[name]
		if m.Comment != nil || m.Policy != nil {
			return nil, fmt.Errorf("%w: map %s: options the encoder does not write", ErrEncode, name)
		}
		if err := b.addSet(name, m.TypeOf, m.Flags, m.Size, m.Timeout); err != nil {
			return nil, err
		}
	}
	for _, name := range sortedKeys(desired.Chains) {
		for _, rule := range desired.Chains[name].Rules {
			if err := b.addRule(name, rule); err != nil {
				return nil, err
			}
		}
	}
	for _, name := range sortedKeys(desired.Elements) {
		if !desired.has(name) {
			return nil, fmt.Errorf("%w: elements for %s, which the ruleset does not declare", ErrEncode, name)
		}
		if err := b.addElements(desired, name, unix.NFT_MSG_NEWSETELEM, maps.Values(desired.Elements[name])); err != nil {
			return nil, err
		}
	}
	return b, nil
}

// reloadBatch replaces the elements of every set and map of desired except
// dynamic ones (their elements are written by the packet path) and the
// stamp. It is written as fullBatch is, a container at a time, so that a
// restarted agent's reload at 10k Services holds the batch and nothing
// more: through google/nftables it held every element encoded, the
// library's messages, and their copy into one buffer.
func reloadBatch(desired *Ruleset) (*nlBatch, error) {
	b := newBatch()
	if err := b.knowSets(desired); err != nil {
		return nil, err
	}
	for _, name := range sortedKeys(desired.Elements) {
		if !desired.has(name) {
			return nil, fmt.Errorf("%w: elements for %s, which the ruleset does not declare", ErrEncode, name)
		}
	}
	for _, name := range containerNames(desired) {
		_, flags, _ := containerType(desired, name)
		if name == stampSet || slices.Contains(flags, knftables.DynamicFlag) {
			continue
		}
		b.flushSet(name)
		// In map order: the kernel does not care, and sorting 33k keys
		// would cost a tenth of the reload.
		if err := b.addElements(desired, name, unix.NFT_MSG_NEWSETELEM, maps.Values(desired.Elements[name])); err != nil {
			return nil, err
		}
	}
	return b, nil
}

// addElements encodes elements of one container of r and adds (or
// deletes, by key) them, one at a time: at 10k Services a full sync's
// elements, encoded all at once, were a fifth of its heap.
func (b *nlBatch) addElements(r *Ruleset, name string, msgType uint16, els iter.Seq[Element]) error {
	typeOf, flags, _ := containerType(r, name)
	if slices.Contains(flags, knftables.DynamicFlag) && msgType == unix.NFT_MSG_NEWSETELEM {
		return fmt.Errorf("%w: elements of dynamic map %s", ErrEncode, name)
	}
	l, err := layoutOf(typeOf, flags)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	w := b.elementList(msgType, name, b.sets[name].id)
	var enc []nftables.SetElement
	for e := range els {
		if enc, err = appendEncoded(enc[:0], l, e); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		for _, el := range enc {
			if msgType == unix.NFT_MSG_DELSETELEM {
				// a delete names the element by its key alone
				el.Val, el.VerdictData, el.Comment = nil, nil, ""
			}
			if err := w.add(el); err != nil {
				return err
			}
		}
	}
	return w.close()
}

// ChangeSkeleton implements SkeletonWriter.
func (n *NetlinkReloader) ChangeSkeleton(_ context.Context, desired *Ruleset, newChains []string,
	changes []ElementChange, deadChains []string) error {
	b, err := changeBatch(desired, newChains, changes, deadChains)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrReload, err)
	}
	return n.run(b)
}

func changeBatch(desired *Ruleset, newChains []string, changes []ElementChange, deadChains []string) (*nlBatch, error) {
	b := newBatch()
	if err := b.knowSets(desired); err != nil {
		return nil, err
	}
	for _, name := range newChains {
		if err := b.addChain(&desired.Chains[name].Chain); err != nil {
			return nil, err
		}
	}
	for _, name := range newChains {
		for _, rule := range desired.Chains[name].Rules {
			if err := b.addRule(name, rule); err != nil {
				return nil, err
			}
		}
	}
	// consecutive changes of one container and kind share a message
	for len(changes) > 0 {
		n := 1
		for n < len(changes) && changes[n].Container == changes[0].Container && changes[n].Delete == changes[0].Delete {
			n++
		}
		els := make([]Element, n)
		for i := range n {
			els[i] = changes[i].Element
		}
		msgType := uint16(pick(changes[0].Delete, unix.NFT_MSG_DELSETELEM, unix.NFT_MSG_NEWSETELEM))
		if !desired.has(changes[0].Container) {
			return nil, fmt.Errorf("%w: change to %s, which the ruleset does not declare", ErrEncode, changes[0].Container)
		}
		if err := b.addElements(desired, changes[0].Container, msgType, slices.Values(els)); err != nil {
			return nil, err
		}
		changes = changes[n:]
	}
	for _, name := range deadChains {
		if err := b.flushChain(name); err != nil {
			return nil, err
		}
		if err := b.deleteChain(name); err != nil {
			return nil, err
		}
	}
	return b, nil
}

// run sends b over a connection whose buffer holds it whole: the kernel
// applies a batch atomically only if it arrives in one message.
func (n *NetlinkReloader) run(b *nlBatch) error {
	c, err := netlink.Dial(unix.NETLINK_NETFILTER, &netlink.Config{NetNS: n.netns})
	if err != nil {
		return fmt.Errorf("%w: dial: %w", ErrReload, err)
	}
	defer func() { _ = c.Close() }()
	if err := forceSocketBuffers(c, max(b.bytes+1<<20, 4<<20)); err != nil {
		return fmt.Errorf("%w: %w", ErrReload, err)
	}
	if err := b.send(c); err != nil {
		return fmt.Errorf("%w: %w", ErrReload, err)
	}
	return nil
}
