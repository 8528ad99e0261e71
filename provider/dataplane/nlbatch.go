package dataplane

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/userdata"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
	"sigs.k8s.io/knftables"
)

// nlBatch collects the messages of one nftables transaction over netlink:
// the kernel applies a batch whole or not at all, as it does nft's. It
// writes table, chains, sets and rules the way nft 1.0.6 does (same
// attributes and userdata), so that nft lists the result as if it had
// written it; google/nftables cannot say what nft says about a set's type
// ("typeof") or a table's comment.
//
// Messages are written in their wire format, back to back in pages that
// send hands to the kernel as they are (one sendmsg gathering the pages):
// at 10k Services a batch is ~5 MB, and a message per element list, each
// copied again into one buffer by netlink.Conn.SendMessages, made the
// first sync's transient heap several times that.
type nlBatch struct {
	pages  [][]byte
	bytes  int
	seq    uint32 // the last message's sequence number; the batch's begin is 1
	lastID uint32
	sets   map[string]setInfo
	rc     ruleCompiler
}

func newBatch() *nlBatch {
	b := &nlBatch{sets: map[string]setInfo{}}
	b.rc = ruleCompiler{sets: b.sets, nextID: func() uint32 { b.lastID++; return b.lastID }}
	b.batchMessage(unix.NFNL_MSG_BATCH_BEGIN)
	return b
}

// Pages are this large unless a message needs more; the first is smaller,
// since a partial sync's batch is a few hundred bytes.
const (
	firstPageBytes = 64 << 10
	pageBytes      = 1 << 20
	nlmsgHeaderLen = 16
)

// open starts a message in a page with room bytes to spare after the
// header, and returns that page and the message's offset in it. The caller
// appends the payload and hands the page to close, before opening another.
func (b *nlBatch) open(msgType uint16, flags netlink.HeaderFlags, room int) (page []byte, at int) {
	need := nlmsgHeaderLen + room
	if n := len(b.pages); n == 0 || cap(b.pages[n-1])-len(b.pages[n-1]) < need {
		b.pages = append(b.pages, make([]byte, 0, max(need, pick(n == 0, firstPageBytes, pageBytes))))
	}
	page = b.pages[len(b.pages)-1]
	at = len(page)
	b.seq++
	page = binary.NativeEndian.AppendUint32(page, 0) // the length, set by close
	page = binary.NativeEndian.AppendUint16(page, msgType)
	page = binary.NativeEndian.AppendUint16(page, uint16(netlink.Request|flags))
	page = binary.NativeEndian.AppendUint32(page, b.seq)
	page = binary.NativeEndian.AppendUint32(page, 0) // port ID: the kernel's to fill in
	return page, at
}

// close ends the message open at offset at of page.
func (b *nlBatch) close(page []byte, at int) {
	binary.NativeEndian.PutUint32(page[at:], uint32(len(page)-at))
	for len(page)%4 != 0 {
		page = append(page, 0)
	}
	b.bytes += len(page) - at
	b.pages[len(b.pages)-1] = page
}

func (b *nlBatch) batchMessage(msgType uint16) {
	p, at := b.open(msgType, 0, 4)
	b.close(append(p, unix.AF_UNSPEC, unix.NFNETLINK_V0, 0, unix.NFNL_SUBSYS_NFTABLES), at)
}

// knowSets tells the batch about sets and maps the kernel already holds.
func (b *nlBatch) knowSets(r *Ruleset) error {
	for _, name := range containerNames(r) {
		typeOf, flags, _ := containerType(r, name)
		info, err := setInfoOf(typeOf, flags)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		b.sets[name] = info
	}
	return nil
}

func setInfoOf(typeOf string, flags []knftables.SetFlag) (setInfo, error) {
	var info setInfo
	keyText, dataText, isMap := strings.Cut(typeOf, " : ")
	var err error
	if info.key, err = parseConcat(keyText); err != nil {
		return info, err
	}
	if isMap && dataText != "verdict" {
		if info.data, err = parseConcat(dataText); err != nil {
			return info, err
		}
	}
	info.interval = slices.Contains(flags, knftables.IntervalFlag)
	return info, nil
}

func (b *nlBatch) add(msgType uint16, flags netlink.HeaderFlags, enc func(ae *netlink.AttributeEncoder)) error {
	ae := netlink.NewAttributeEncoder()
	ae.ByteOrder = binary.BigEndian // nftables' numbers are in network order
	enc(ae)
	data, err := ae.Encode()
	if err != nil {
		return fmt.Errorf("%w: %w", ErrEncode, err)
	}
	p, at := b.open(unix.NFNL_SUBSYS_NFTABLES<<8|msgType, flags, 4+len(data))
	p = append(p, unix.NFPROTO_INET, unix.NFNETLINK_V0, 0, 0)
	b.close(append(p, data...), at)
	return nil
}

func (b *nlBatch) addTable(comment string) error {
	return b.add(unix.NFT_MSG_NEWTABLE, netlink.Create, func(ae *netlink.AttributeEncoder) {
		ae.String(unix.NFTA_TABLE_NAME, TableName)
		ae.Uint32(unix.NFTA_TABLE_FLAGS, 0)
		if comment != "" {
			ae.Bytes(nftaTableUserdata, userdata.AppendString(nil, userdata.TypeComment, comment))
		}
	})
}

func (b *nlBatch) deleteTable() error {
	return b.add(unix.NFT_MSG_DELTABLE, 0, func(ae *netlink.AttributeEncoder) {
		ae.String(unix.NFTA_TABLE_NAME, TableName)
		ae.Uint32(unix.NFTA_TABLE_FLAGS, 0)
	})
}

var hookNumbers = map[knftables.BaseChainHook]uint32{
	knftables.PreroutingHook: unix.NF_INET_PRE_ROUTING, knftables.InputHook: unix.NF_INET_LOCAL_IN,
	knftables.ForwardHook: unix.NF_INET_FORWARD, knftables.OutputHook: unix.NF_INET_LOCAL_OUT,
	knftables.PostroutingHook: unix.NF_INET_POST_ROUTING,
}

func (b *nlBatch) addChain(c *knftables.Chain) error {
	var hook uint32
	var prio int
	if c.Hook != nil {
		var ok bool
		if hook, ok = hookNumbers[*c.Hook]; !ok || c.Type == nil || c.Priority == nil {
			return fmt.Errorf("%w: chain %s: hook %q", ErrEncode, c.Name, *c.Hook)
		}
		var err error
		if prio, err = knftables.ParsePriority(TableFamily, string(*c.Priority)); err != nil {
			return fmt.Errorf("%w: chain %s: %w", ErrEncode, c.Name, err)
		}
	}
	if c.Comment != nil || c.Device != nil {
		return fmt.Errorf("%w: chain %s: comments and devices", ErrEncode, c.Name)
	}
	return b.add(unix.NFT_MSG_NEWCHAIN, netlink.Create, func(ae *netlink.AttributeEncoder) {
		ae.String(unix.NFTA_CHAIN_TABLE, TableName)
		ae.String(unix.NFTA_CHAIN_NAME, c.Name)
		if c.Hook == nil {
			return
		}
		ae.String(unix.NFTA_CHAIN_TYPE, string(*c.Type))
		ae.Nested(unix.NFTA_CHAIN_HOOK, func(hae *netlink.AttributeEncoder) error {
			hae.Uint32(unix.NFTA_HOOK_HOOKNUM, hook)
			hae.Uint32(unix.NFTA_HOOK_PRIORITY, uint32(int32(prio)))
			return nil
		})
	})
}

func (b *nlBatch) deleteChain(name string) error {
	return b.add(unix.NFT_MSG_DELCHAIN, 0, func(ae *netlink.AttributeEncoder) {
		ae.String(unix.NFTA_CHAIN_TABLE, TableName)
		ae.String(unix.NFTA_CHAIN_NAME, name)
	})
}

// flushSet deletes every element of a set or map: a DELSETELEM without
// an element list.
func (b *nlBatch) flushSet(name string) {
	p, at := b.open(unix.NFNL_SUBSYS_NFTABLES<<8|unix.NFT_MSG_DELSETELEM, 0, 4+2*(4+len(TableName)+len(name)+4))
	p = append(p, unix.NFPROTO_INET, unix.NFNETLINK_V0, 0, 0)
	p = appendAttr(p, unix.NFTA_SET_ELEM_LIST_TABLE, cString(TableName))
	b.close(appendAttr(p, unix.NFTA_SET_ELEM_LIST_SET, cString(name)), at)
}

func (b *nlBatch) flushChain(name string) error {
	return b.add(unix.NFT_MSG_DELRULE, 0, func(ae *netlink.AttributeEncoder) {
		ae.String(unix.NFTA_RULE_TABLE, TableName)
		ae.String(unix.NFTA_RULE_CHAIN, name)
	})
}

// Set flags and attributes golang.org/x/sys does not name.
const (
	nftaTableUserdata = 6
	nftSetConcat      = 0x80
	nftaSetDescConcat = 2
	nftaSetFieldLen   = 1
	nftaSetElemKeyEnd = 10
	udataSetMerge     = 2
	udataSetKeyOrder  = 0
	udataSetDataOrder = 1
	udataSetKeyTypeof = 3
	udataSetDataType  = 4
	udataSetDataIntvl = 6
)

// addSet declares a named set or map from its knftables definition.
func (b *nlBatch) addSet(name, typeOf string, flags []knftables.SetFlag, size *uint64, timeout *time.Duration) error {
	info, err := setInfoOf(typeOf, flags)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	_, dataText, isMap := strings.Cut(typeOf, " : ")
	info.id = b.rc.nextID()
	b.sets[name] = info
	var setFlags uint32
	for _, f := range flags {
		switch f {
		case knftables.IntervalFlag:
			setFlags |= unix.NFT_SET_INTERVAL
		case knftables.DynamicFlag:
			setFlags |= unix.NFT_SET_EVAL
		case knftables.TimeoutFlag:
			setFlags |= unix.NFT_SET_TIMEOUT
		default:
			return fmt.Errorf("%w: %s: flag %q", ErrEncode, name, f)
		}
	}
	if isMap {
		setFlags |= unix.NFT_SET_MAP
	}
	concatInterval := info.interval && len(info.key) > 1
	if concatInterval {
		setFlags |= nftSetConcat
	}
	ud := udataU32(nil, udataSetKeyOrder, info.key.byteorder())
	if isMap {
		ud = udataU32(ud, udataSetDataOrder, 0)
	}
	ud = udata(ud, udataSetKeyTypeof, info.key.typeof())
	if isMap {
		dataTypeof := typeofExpr(exprTypeVerdict, nil)
		if info.data != nil {
			dataTypeof = info.data.typeof()
		}
		ud = udataU32(udata(ud, udataSetDataType, dataTypeof), udataSetDataIntvl, 0)
	}
	return b.add(unix.NFT_MSG_NEWSET, netlink.Create, func(ae *netlink.AttributeEncoder) {
		ae.String(unix.NFTA_SET_TABLE, TableName)
		ae.String(unix.NFTA_SET_NAME, name)
		ae.Uint32(unix.NFTA_SET_FLAGS, setFlags)
		ae.Uint32(unix.NFTA_SET_KEY_TYPE, info.key.dtype())
		ae.Uint32(unix.NFTA_SET_KEY_LEN, uint32(info.key.keyLen()))
		if isMap && dataText == "verdict" {
			ae.Uint32(unix.NFTA_SET_DATA_TYPE, dtypeVerdict)
			ae.Uint32(unix.NFTA_SET_DATA_LEN, 0)
		} else if isMap {
			ae.Uint32(unix.NFTA_SET_DATA_TYPE, info.data.dtype())
			ae.Uint32(unix.NFTA_SET_DATA_LEN, uint32(info.data.keyLen()))
		}
		ae.Uint32(unix.NFTA_SET_ID, info.id)
		if size != nil || concatInterval {
			ae.Nested(unix.NFTA_SET_DESC, func(dae *netlink.AttributeEncoder) error {
				if size != nil {
					dae.Uint32(unix.NFTA_SET_DESC_SIZE, uint32(*size))
				}
				if concatInterval {
					dae.Nested(nftaSetDescConcat, func(cae *netlink.AttributeEncoder) error {
						for _, t := range info.key {
							cae.Nested(unix.NFTA_LIST_ELEM, func(fae *netlink.AttributeEncoder) error {
								fae.Uint32(nftaSetFieldLen, uint32(t.size))
								return nil
							})
						}
						return nil
					})
				}
				return nil
			})
		}
		if timeout != nil {
			ae.Uint64(unix.NFTA_SET_TIMEOUT, uint64(timeout.Milliseconds()))
		}
		ae.Bytes(unix.NFTA_SET_USERDATA, ud)
	})
}

// addAnonSet declares a rule's constant set and its elements.
func (b *nlBatch) addAnonSet(s anonSet) error {
	flags := uint32(unix.NFT_SET_ANONYMOUS | unix.NFT_SET_CONSTANT)
	ud := udataU32(nil, udataSetKeyOrder, s.key.byteorder())
	if s.interval {
		flags |= unix.NFT_SET_INTERVAL
		ud = udataU32(ud, udataSetMerge, 1)
	}
	ud = udata(ud, udataSetKeyTypeof, s.key.typeof())
	err := b.add(unix.NFT_MSG_NEWSET, netlink.Create, func(ae *netlink.AttributeEncoder) {
		ae.String(unix.NFTA_SET_TABLE, TableName)
		ae.String(unix.NFTA_SET_NAME, "__set%d")
		ae.Uint32(unix.NFTA_SET_FLAGS, flags)
		ae.Uint32(unix.NFTA_SET_KEY_TYPE, s.key.dtype())
		ae.Uint32(unix.NFTA_SET_KEY_LEN, uint32(s.key.keyLen()))
		ae.Uint32(unix.NFTA_SET_ID, s.id)
		ae.Nested(unix.NFTA_SET_DESC, func(dae *netlink.AttributeEncoder) error {
			dae.Uint32(unix.NFTA_SET_DESC_SIZE, uint32(len(s.elements)))
			return nil
		})
		ae.Bytes(unix.NFTA_SET_USERDATA, ud)
	})
	if err != nil {
		return err
	}
	return b.elements(unix.NFT_MSG_NEWSETELEM, "__set%d", s.id, s.elements)
}

// addRule compiles a rule and appends it to chain, after the anonymous
// sets it names.
func (b *nlBatch) addRule(chain, rule string) error {
	exprs, anon, err := b.rc.compile(rule)
	if err != nil {
		return err
	}
	for _, s := range anon {
		if err := b.addAnonSet(s); err != nil {
			return err
		}
	}
	return b.add(unix.NFT_MSG_NEWRULE, netlink.Create|netlink.Append, func(ae *netlink.AttributeEncoder) {
		ae.String(unix.NFTA_RULE_TABLE, TableName)
		ae.String(unix.NFTA_RULE_CHAIN, chain)
		encodeExprs(ae, exprs)
	})
}

// elements adds (or, with DELSETELEM, deletes) elements (see elementList).
func (b *nlBatch) elements(msgType uint16, set string, id uint32, els []nftables.SetElement) error {
	w := b.elementList(msgType, set, id)
	for _, e := range els {
		if err := w.add(e); err != nil {
			return err
		}
	}
	return w.close()
}

// elementList writes elements into messages of one kind for one set as
// they come, split into messages whose element list fits a netlink
// attribute, so that no list of a container's elements, encoded or not,
// is ever held. The elements are written by hand rather than through
// netlink.AttributeEncoder: at 10k Services a full sync has ~56k of them,
// and the encoder's closures and copies cost a quarter of the sync. No
// other message may be opened between its first add and its close.
type elementList struct {
	b       *nlBatch
	msgType uint16
	set     string
	id      uint32
	page    []byte // holding the open message; nil if none is
	at      int    // the open message's offset in page
	list    int    // its element list attribute's offset
	n       int    // elements in it
	size    int    // their encodedSize
}

func (b *nlBatch) elementList(msgType uint16, set string, id uint32) *elementList {
	return &elementList{b: b, msgType: msgType, set: set, id: id}
}

// elementSlack bounds one element's bytes past maxElementListBytes, and
// the message's attributes before its list.
const elementSlack = 1024

func (w *elementList) add(e nftables.SetElement) error {
	size := encodedSize(e)
	if w.page != nil && w.size+size > maxElementListBytes {
		if err := w.close(); err != nil {
			return err
		}
	}
	if w.page == nil {
		w.open()
	}
	w.n++
	at := len(w.page)
	w.page = appendAttr(w.page, netlink.Nested|uint16(w.n), nil)
	w.page = endAttr(appendElement(w.page, e), at)
	w.size += size
	return nil
}

func (w *elementList) open() {
	flags := pick(w.msgType == unix.NFT_MSG_NEWSETELEM, netlink.Create, 0)
	p, at := w.b.open(unix.NFNL_SUBSYS_NFTABLES<<8|w.msgType, flags, maxElementListBytes+elementSlack)
	p = append(p, unix.NFPROTO_INET, unix.NFNETLINK_V0, 0, 0)
	p = appendAttr(p, unix.NFTA_SET_ELEM_LIST_TABLE, cString(TableName))
	p = appendAttr(p, unix.NFTA_SET_ELEM_LIST_SET, cString(w.set))
	if w.id != 0 {
		p = appendAttr(p, unix.NFTA_SET_ELEM_LIST_SET_ID, be32(w.id))
	}
	w.list = len(p)
	w.page, w.at, w.n, w.size = appendAttr(p, netlink.Nested|unix.NFTA_SET_ELEM_LIST_ELEMENTS, nil), at, 0, 0
}

// close ends the open message, if any.
func (w *elementList) close() error {
	if w.page == nil {
		return nil
	}
	if len(w.page)-w.list > 0xffff {
		return fmt.Errorf("%w: element list of %d bytes", ErrEncode, len(w.page)-w.list)
	}
	w.b.close(endAttr(w.page, w.list), w.at)
	w.page = nil
	return nil
}

func cString(s string) []byte { return append([]byte(s), 0) }

// appendAttr appends a netlink attribute; a nested one is closed by endAttr.
func appendAttr(b []byte, typ uint16, payload []byte) []byte {
	b = binary.NativeEndian.AppendUint16(b, uint16(4+len(payload)))
	b = binary.NativeEndian.AppendUint16(b, typ)
	b = append(b, payload...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

// endAttr sets the length of the nested attribute that starts at at.
func endAttr(b []byte, at int) []byte {
	binary.NativeEndian.PutUint16(b[at:], uint16(len(b)-at))
	return b
}

func appendValue(b []byte, typ uint16, value []byte) []byte {
	at := len(b)
	b = appendAttr(b, netlink.Nested|typ, nil)
	b = appendAttr(b, unix.NFTA_DATA_VALUE, value)
	return endAttr(b, at)
}

func appendElement(b []byte, e nftables.SetElement) []byte {
	if e.IntervalEnd {
		b = appendAttr(b, unix.NFTA_SET_ELEM_FLAGS, be32(unix.NFT_SET_ELEM_INTERVAL_END))
	}
	b = appendValue(b, unix.NFTA_SET_ELEM_KEY, e.Key)
	if len(e.KeyEnd) > 0 {
		b = appendValue(b, nftaSetElemKeyEnd, e.KeyEnd)
	}
	switch {
	case e.VerdictData != nil:
		data := len(b)
		b = appendAttr(b, netlink.Nested|unix.NFTA_SET_ELEM_DATA, nil)
		verdict := len(b)
		b = appendAttr(b, netlink.Nested|unix.NFTA_DATA_VERDICT, nil)
		b = appendAttr(b, unix.NFTA_VERDICT_CODE, be32(uint32(int32(e.VerdictData.Kind))))
		if e.VerdictData.Chain != "" {
			b = appendAttr(b, unix.NFTA_VERDICT_CHAIN, cString(e.VerdictData.Chain))
		}
		b = endAttr(endAttr(b, verdict), data)
	case len(e.Val) > 0:
		b = appendValue(b, unix.NFTA_SET_ELEM_DATA, e.Val)
	}
	if e.Comment != "" {
		b = appendAttr(b, unix.NFTA_SET_ELEM_USERDATA, userdata.AppendString(nil, userdata.NFTNL_UDATA_SET_ELEM_COMMENT, e.Comment))
	}
	return b
}

// send runs the batch as one transaction. Errors come back in order, and
// the kernel handles a batch before it reads the next message, so a
// generation request after it tells when every error has been reported:
// no message needs an acknowledgement of its own.
func (b *nlBatch) send(c *netlink.Conn) error {
	if b.seq == 1 {
		return nil // the batch's begin alone
	}
	b.batchMessage(unix.NFNL_MSG_BATCH_END)
	// Errors then carry the failing message's header, not the whole
	// message, and the kernel's reason.
	for _, o := range []netlink.ConnOption{netlink.CapAcknowledge, netlink.ExtendedAcknowledge} {
		if err := c.SetOption(o, true); err != nil {
			return fmt.Errorf("set netlink option: %w", err)
		}
	}
	if err := sendPages(c, b.pages); err != nil {
		return fmt.Errorf("send batch: %w", err)
	}
	// The kernel ignores what follows a batch in the same datagram, so the
	// generation request goes in a datagram of its own.
	genSeq := b.seq + 1
	if _, err := c.Send(netlink.Message{
		Header: netlink.Header{
			Type:     netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_GETGEN),
			Flags:    netlink.Request,
			Sequence: genSeq,
		},
		Data: []byte{unix.AF_UNSPEC, unix.NFNETLINK_V0, 0, 0},
	}); err != nil {
		return fmt.Errorf("send generation request: %w", err)
	}
	// A reply is on its way whatever happened; the deadline only guards
	// against a kernel that breaks that promise.
	if err := c.SetReadDeadline(time.Now().Add(time.Minute)); err != nil {
		return err
	}
	var errs error
	for {
		replies, err := c.Receive()
		if err != nil {
			var errno unix.Errno
			if !errors.As(err, &errno) || errno == unix.ENOBUFS {
				// a timeout, or replies lost (which only errors
				// make numerous): the batch failed or cannot be known
				// to have succeeded
				return errors.Join(errs, fmt.Errorf("receive: %w", err))
			}
			errs = errors.Join(errs, err)
			continue
		}
		for _, m := range replies {
			if m.Header.Sequence == genSeq {
				return errs
			}
		}
	}
}

// sendPages sends pages as one datagram, gathered by the kernel: a batch
// is atomic only if it arrives whole, and gathering spares a copy of it.
func sendPages(c *netlink.Conn, pages [][]byte) error {
	raw, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	err = raw.Write(func(fd uintptr) bool {
		_, serr = unix.SendmsgBuffers(int(fd), pages, nil, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}, 0)
		return !errors.Is(serr, unix.EAGAIN) // else wait until the socket takes it
	})
	return errors.Join(err, serr)
}
