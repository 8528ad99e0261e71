package dataplane

import (
	"encoding/binary"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// TestBatchPagesHoldWholeMessages: a batch of 3k Services, larger than a
// page and with element lists split over several messages, is a sequence
// of whole netlink messages, numbered in order from the batch's begin to
// its end, with every element of every map once and no element list over
// a netlink attribute's 65535 bytes.
func TestBatchPagesHoldWholeMessages(t *testing.T) {
	svcs, sl := scaleCluster(3000)
	r := Build(svcs, sl, testNode, Options{})
	b, err := fullBatch(r)
	if err != nil {
		t.Fatal(err)
	}
	b.batchMessage(unix.NFNL_MSG_BATCH_END) // as send does
	if len(b.pages) < 2 {
		t.Fatalf("%d bytes in %d page(s): the test does not exercise pages", b.bytes, len(b.pages))
	}
	var seq uint32
	total := 0
	elements := map[string]int{} // by set, in maps alone: set intervals add end elements
	lists := map[string]int{}
	for i, page := range b.pages {
		total += len(page)
		msgs, err := syscall.ParseNetlinkMessage(page)
		if err != nil {
			t.Fatalf("page %d: %v", i, err)
		}
		for _, m := range msgs {
			if seq++; m.Header.Seq != seq {
				t.Fatalf("message %d has sequence number %d", seq, m.Header.Seq)
			}
			if m.Header.Type != unix.NFNL_SUBSYS_NFTABLES<<8|unix.NFT_MSG_NEWSETELEM {
				continue
			}
			set, n := readElementList(t, m.Data[4:])
			if r.Maps[set] != nil {
				elements[set] += n
				lists[set]++
			}
		}
	}
	if total != b.bytes {
		t.Errorf("pages hold %d bytes, the batch counted %d", total, b.bytes)
	}
	first, last := b.pages[0], b.pages[len(b.pages)-1]
	if typ := binary.NativeEndian.Uint16(first[4:]); typ != unix.NFNL_MSG_BATCH_BEGIN {
		t.Errorf("first message of type %#x, want the batch's begin", typ)
	}
	if seq != b.seq || binary.NativeEndian.Uint16(last[len(last)-20+4:]) != unix.NFNL_MSG_BATCH_END {
		t.Errorf("%d messages parsed of %d, or the last is not the batch's end", seq, b.seq)
	}
	for name := range r.Maps {
		if elements[name] != len(r.Elements[name]) {
			t.Errorf("map %s: %d elements in the batch, %d in the ruleset", name, elements[name], len(r.Elements[name]))
		}
	}
	if lists["ep6"] < 2 {
		t.Errorf("ep6's %d elements in %d message(s): the test does not exercise splitting", elements["ep6"], lists["ep6"])
	}
}

// readElementList reads a NEWSETELEM message's set name and counts its
// elements; a list past 65535 bytes would wrap its length and lose some.
func readElementList(t *testing.T, attrs []byte) (set string, n int) {
	t.Helper()
	for len(attrs) >= 4 {
		size, typ := int(binary.NativeEndian.Uint16(attrs)), binary.NativeEndian.Uint16(attrs[2:])&^unix.NLA_F_NESTED
		if size < 4 || size > len(attrs) {
			t.Fatalf("attribute of %d bytes in %d", size, len(attrs))
		}
		switch typ {
		case unix.NFTA_SET_ELEM_LIST_SET:
			set = string(attrs[4 : size-1])
		case unix.NFTA_SET_ELEM_LIST_ELEMENTS:
			for list := attrs[4:size]; len(list) >= 4; n++ {
				el := int(binary.NativeEndian.Uint16(list))
				list = list[min(len(list), (el+3)&^3):]
			}
		}
		attrs = attrs[min(len(attrs), (size+3)&^3):]
	}
	return set, n
}
