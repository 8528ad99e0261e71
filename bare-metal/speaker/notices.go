package speaker

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"time"
)

// takeover is the notice a new owner sends every other agent when it
// starts announcing addresses: the previous owner, which keeps answering
// during a planned handover, stops when it gets it.
type takeover struct {
	Announcing []netip.Addr `json:"announcing"`
}

func encodeTakeover(addrs []netip.Addr) ([]byte, error) {
	return json.Marshal(takeover{Announcing: addrs})
}

func decodeTakeover(payload []byte) ([]netip.Addr, error) {
	var t takeover
	if err := json.Unmarshal(payload, &t); err != nil {
		return nil, fmt.Errorf("takeover notice: %w", err)
	}
	return t.Announcing, nil
}

// noticeRepeats are the offsets at which a takeover notice is sent again:
// it travels over UDP, and a lost one would leave the old owner answering
// until its release timeout.
var noticeRepeats = []time.Duration{0, 100 * time.Millisecond, 300 * time.Millisecond}
