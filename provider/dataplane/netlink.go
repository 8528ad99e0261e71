package dataplane

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
	"sigs.k8s.io/knftables"
)

// ErrReload wraps every failure of a netlink element reload.
var ErrReload = errors.New("reload nftables elements over netlink")

// ErrNoTable is returned by ElementReloader.Stamp when there is no herald
// table at all.
var ErrNoTable = errors.New("no herald nftables table")

// ElementReloader writes elements of the herald table in atomic kernel
// transactions, without touching chains, rules or set definitions. It lets
// a full sync whose skeleton the kernel already holds skip nft, which spends
// most of a full sync parsing element text, and a partial sync skip starting
// nft (see doc.go).
type ElementReloader interface {
	// Fingerprint identifies the table's chains, rules and set definitions
	// (not their elements) as the kernel holds them now. Two equal
	// fingerprints mean nobody changed the skeleton in between.
	Fingerprint(ctx context.Context) ([]byte, error)
	// Reload flushes every set and map of desired except dynamic ones (their
	// elements are written by the packet path) and the stamp, and adds
	// desired's elements, in one transaction.
	Reload(ctx context.Context, desired *Ruleset) error
	// Change deletes and adds elements of desired's sets and maps, in the
	// order given, in one transaction (a partial sync).
	Change(ctx context.Context, desired *Ruleset, changes []ElementChange) error
	// Stamp returns the note SetStamp left in the table; "" if none, and
	// ErrNoTable if there is no table.
	Stamp(ctx context.Context) (string, error)
	// SetStamp replaces the note kept in the table.
	SetStamp(ctx context.Context, note string) error
}

// NetlinkReloader is the ElementReloader that talks to the kernel directly.
type NetlinkReloader struct {
	netns int
}

// NewNetlinkReloader returns a reloader for the herald table in the network
// namespace netnsFD refers to; 0 means the caller's.
func NewNetlinkReloader(netnsFD int) *NetlinkReloader { return &NetlinkReloader{netns: netnsFD} }

// Reload implements ElementReloader.
func (n *NetlinkReloader) Reload(_ context.Context, desired *Ruleset) error {
	b, err := reloadBatch(desired)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrReload, err)
	}
	return n.run(b)
}

// Change implements ElementReloader.
func (n *NetlinkReloader) Change(_ context.Context, desired *Ruleset, changes []ElementChange) error {
	type run struct {
		set    *nftables.Set
		delete bool
		els    []nftables.SetElement
	}
	table := heraldTable()
	var runs []run
	size := 0
	for _, c := range changes {
		if !desired.has(c.Container) {
			return fmt.Errorf("%w: change to %s, which the ruleset does not declare", ErrReload, c.Container)
		}
		typeOf, flags, isMap := containerType(desired, c.Container)
		l, err := layoutOf(typeOf, flags)
		if err != nil {
			return fmt.Errorf("%w: %s: %w", ErrReload, c.Container, err)
		}
		enc, err := encodeElements(l, []Element{c.Element})
		if err != nil {
			return fmt.Errorf("%w: %s: %w", ErrReload, c.Container, err)
		}
		if c.Delete {
			// a delete names the element by its key alone
			for i := range enc {
				enc[i] = nftables.SetElement{Key: enc[i].Key, KeyEnd: enc[i].KeyEnd, IntervalEnd: enc[i].IntervalEnd}
			}
		}
		if last := len(runs) - 1; last >= 0 && runs[last].set.Name == c.Container && runs[last].delete == c.Delete {
			runs[last].els = append(runs[last].els, enc...)
		} else {
			runs = append(runs, run{
				set:    &nftables.Set{Table: table, Name: c.Container, IsMap: isMap, Interval: l.interval},
				delete: c.Delete, els: enc,
			})
		}
	}
	type message struct {
		run   run
		chunk []nftables.SetElement
	}
	var msgs []message
	for _, r := range runs {
		chunks, bytes := chunkElements(r.els)
		size += bytes
		for _, ch := range chunks {
			msgs = append(msgs, message{r, ch})
		}
	}
	c, err := n.conn(size)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrReload, err)
	}
	for _, m := range msgs {
		if m.run.delete {
			err = c.SetDeleteElements(m.run.set, m.chunk)
		} else {
			err = c.SetAddElements(m.run.set, m.chunk)
		}
		if err != nil {
			return fmt.Errorf("%w: %s: %w", ErrReload, m.run.set.Name, err)
		}
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("%w: %w", ErrReload, err)
	}
	return nil
}

// Stamp implements ElementReloader.
func (n *NetlinkReloader) Stamp(context.Context) (string, error) {
	c, err := n.conn(0)
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrReload, err)
	}
	if _, err := c.ListTableOfFamily(TableName, heraldTable().Family); errors.Is(err, unix.ENOENT) {
		return "", ErrNoTable
	}
	els, err := c.GetSetElements(stampSetRef())
	if err != nil {
		return "", fmt.Errorf("%w: read stamp: %w", ErrReload, err)
	}
	for _, e := range els {
		return e.Comment, nil
	}
	return "", nil
}

// SetStamp implements ElementReloader.
func (n *NetlinkReloader) SetStamp(_ context.Context, note string) error {
	c, err := n.conn(0)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrReload, err)
	}
	s := stampSetRef()
	c.FlushSet(s)
	if err := c.SetAddElements(s, []nftables.SetElement{{Key: make([]byte, 4), Comment: note}}); err != nil {
		return fmt.Errorf("%w: write stamp: %w", ErrReload, err)
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("%w: write stamp: %w", ErrReload, err)
	}
	return nil
}

func stampSetRef() *nftables.Set { return &nftables.Set{Table: heraldTable(), Name: stampSet} }

func heraldTable() *nftables.Table {
	return &nftables.Table{Name: TableName, Family: nftables.TableFamilyINet}
}

// maxElementListBytes keeps one message's element list inside a netlink
// attribute, whose length is 16 bits.
const maxElementListBytes = 60000

// chunkElements splits elements into lists that each fit one netlink
// attribute, and returns about how many bytes they encode to.
func chunkElements(els []nftables.SetElement) ([][]nftables.SetElement, int) {
	var chunks [][]nftables.SetElement
	total, inChunk, from := 0, 0, 0
	for i, e := range els {
		n := encodedSize(e)
		if inChunk+n > maxElementListBytes && i > from {
			chunks = append(chunks, els[from:i])
			from, inChunk = i, 0
		}
		inChunk += n
		total += n
	}
	if from < len(els) {
		chunks = append(chunks, els[from:])
	}
	return chunks, total + 256*len(chunks)
}

// encodedSize bounds the bytes one element takes in a NEWSETELEM message:
// nested attribute headers, 4-byte alignment, and a NUL after strings.
func encodedSize(e nftables.SetElement) int {
	attr := func(payload int) int { return 4 + (payload+3)&^3 }
	n := attr(0) + attr(attr(len(e.Key))) + attr(4)
	if len(e.KeyEnd) > 0 {
		n += attr(attr(len(e.KeyEnd)))
	}
	if len(e.Val) > 0 {
		n += attr(attr(len(e.Val)))
	}
	if e.VerdictData != nil {
		n += attr(attr(attr(4) + attr(len(e.VerdictData.Chain)+1)))
	}
	if e.Comment != "" {
		n += attr(2 + len(e.Comment) + 1)
	}
	return n
}

// conn opens a netlink connection whose send buffer holds the whole batch:
// the kernel applies a batch atomically only if it arrives in one message,
// and the default buffer (~200 KiB) is far smaller than 10k Services' elements.
// The receive buffer is as large: the kernel acknowledges every message of
// the batch, echoing it, and a reload flushes each of the few hundred sets
// (see pickKind) in a message of its own.
func (n *NetlinkReloader) conn(batchBytes int) (*nftables.Conn, error) {
	buf := max(batchBytes+1<<20, 4<<20)
	opts := []nftables.ConnOption{nftables.WithSockOptions(func(c *netlink.Conn) error {
		return forceSocketBuffers(c, buf)
	})}
	if n.netns != 0 {
		opts = append(opts, nftables.WithNetNSFd(n.netns))
	}
	return nftables.New(opts...)
}

// forceSocketBuffers sizes c's send buffer past the system's limit for
// unprivileged sockets (net.core.wmem_max), which a batch of 10k Services
// exceeds, and its receive buffer alike: the kernel acknowledges every
// message of a batch of hundreds of sets, which overflowed the default
// ("no buffer space"). herald runs with CAP_NET_ADMIN, which allows both.
func forceSocketBuffers(c *netlink.Conn, bytes int) error {
	raw, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := raw.Control(func(fd uintptr) {
		serr = errors.Join(unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, bytes),
			unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, bytes))
	}); err != nil {
		return err
	}
	return serr
}

// nftaSetCount is the element count newer kernels (6.x) report in set dumps;
// golang.org/x/sys does not name it yet.
const nftaSetCount = 20

// Fingerprint implements ElementReloader: a hash of the kernel's chain,
// rule and set dumps for the table. What moves with elements is left out:
// chains' use counters (a verdict map element that jumps to a chain is a
// use) and sets' element counts.
func (n *NetlinkReloader) Fingerprint(_ context.Context) ([]byte, error) {
	c, err := netlink.Dial(unix.NETLINK_NETFILTER, &netlink.Config{NetNS: n.netns})
	if err != nil {
		return nil, fmt.Errorf("%w: dial: %w", ErrReload, err)
	}
	defer func() { _ = c.Close() }()
	h := sha256.New()
	for _, q := range []struct {
		msg      uint16
		volatile uint16 // attribute left out; 0 for none
	}{
		{unix.NFT_MSG_GETCHAIN, unix.NFTA_CHAIN_USE},
		{unix.NFT_MSG_GETRULE, 0},
		{unix.NFT_MSG_GETSET, nftaSetCount},
	} {
		// NFTA_{CHAIN,RULE,SET}_TABLE are all attribute 1; the kernel
		// honours the filter for rules and sets, and we check it for all.
		ae := netlink.NewAttributeEncoder()
		ae.String(unix.NFTA_CHAIN_TABLE, TableName)
		attrs, err := ae.Encode()
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrReload, err)
		}
		msgs, err := c.Execute(netlink.Message{
			Header: netlink.Header{
				Type:  netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | q.msg),
				Flags: netlink.Request | netlink.Dump,
			},
			Data: append([]byte{unix.NFPROTO_INET, unix.NFNETLINK_V0, 0, 0}, attrs...),
		})
		if err != nil {
			return nil, fmt.Errorf("%w: dump %d: %w", ErrReload, q.msg, err)
		}
		for _, m := range msgs {
			if len(m.Data) < 4 {
				continue
			}
			// skip nfgenmsg: its res_id carries the ruleset generation,
			// which any change anywhere in the namespace bumps
			got, err := netlink.UnmarshalAttributes(m.Data[4:])
			if err != nil {
				return nil, fmt.Errorf("%w: dump %d: %w", ErrReload, q.msg, err)
			}
			if !inTable(got) {
				continue
			}
			_ = binary.Write(h, binary.BigEndian, q.msg)
			for _, a := range got {
				if q.volatile != 0 && a.Type&^(netlink.Nested|netlink.NetByteOrder) == q.volatile {
					continue
				}
				_ = binary.Write(h, binary.BigEndian, [2]uint32{uint32(a.Type), uint32(len(a.Data))})
				h.Write(a.Data)
			}
		}
	}
	return h.Sum(nil), nil
}

func inTable(attrs []netlink.Attribute) bool {
	for _, a := range attrs {
		if a.Type == unix.NFTA_CHAIN_TABLE {
			return string(a.Data) == TableName+"\x00"
		}
	}
	return false
}

func containerNames(r *Ruleset) []string {
	names := make([]string, 0, len(r.Sets)+len(r.Maps))
	for n := range r.Sets {
		names = append(names, n)
	}
	for n := range r.Maps {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

func containerType(r *Ruleset, name string) (typeOf string, flags []knftables.SetFlag, isMap bool) {
	if s := r.Sets[name]; s != nil {
		return s.TypeOf, s.Flags, false
	}
	m := r.Maps[name]
	return m.TypeOf, m.Flags, true
}
