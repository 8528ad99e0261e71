package membership

import (
	"bytes"
	"errors"
	"strings"

	"github.com/go-logr/logr"
)

// wireVersion leads every herald message, so a later format can be told
// apart (and ignored by this version).
const wireVersion = 1

var errBadEnvelope = errors.New("membership: not a herald message")

// envelope prefixes payload with the version and the sender's name:
// memberlist hands a received message over without its origin.
func envelope(from string, payload []byte) []byte {
	out := make([]byte, 0, 2+len(from)+len(payload))
	out = append(out, wireVersion, byte(len(from)))
	out = append(out, from...)
	return append(out, payload...)
}

func openEnvelope(msg []byte) (from string, payload []byte, err error) {
	if len(msg) < 2 || msg[0] != wireVersion || len(msg) < 2+int(msg[1]) {
		return "", nil, errBadEnvelope
	}
	n := int(msg[1])
	// The caller's buffer is reused by memberlist after NotifyMsg returns.
	return string(msg[2 : 2+n]), bytes.Clone(msg[2+n:]), nil
}

// LogWriter turns memberlist's log lines ("[LEVEL] memberlist: text") into
// structured log entries: errors and warnings at the default level, the
// rest verbose, so that a healthy cluster's probing stays out of the log.
type LogWriter struct{ Logger logr.Logger }

// Write logs one line.
func (w *LogWriter) Write(p []byte) (int, error) {
	line := strings.TrimSpace(string(p))
	level, text, ok := cutLevel(line)
	switch {
	case !ok:
		w.Logger.V(2).Info(line)
	case level == "ERR":
		w.Logger.Error(errors.New(text), "memberlist")
	case level == "WARN":
		w.Logger.Info(text, "source", "memberlist", "level", "warning")
	case level == "INFO":
		w.Logger.V(2).Info(text, "source", "memberlist")
	default:
		w.Logger.V(5).Info(text, "source", "memberlist")
	}
	return len(p), nil
}

func cutLevel(line string) (level, text string, ok bool) {
	rest, ok := strings.CutPrefix(line, "[")
	if !ok {
		return "", "", false
	}
	level, text, ok = strings.Cut(rest, "]")
	if !ok {
		return "", "", false
	}
	text = strings.TrimSpace(text)
	text = strings.TrimPrefix(text, "memberlist: ")
	return level, text, true
}
