package gossip

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/google/uuid"
)

func sampleMeta() Meta {
	return Meta{
		ID: uuid.MustParse("6ba7b810-9dad-11d1-80b4-00c04fd430c8"), CPUs: 2, MemoryMiB: 24 * 1024,
		Arch: "amd64", OS: "linux", Kernel: "6.1.0-18-amd64", AgentVersion: "v0.1.0",
		Labels:  map[string]string{"zone": "eu-1", "rack": "r12", "gpu": "true"},
		APIPort: 7070, RaftAddr: "10.0.0.1:7947", Roles: RoleVoter | RoleLeader, BootstrapExpect: 3, Term: 7,
		Voters: []uuid.UUID{uuid.MustParse("6ba7b810-9dad-11d1-80b4-00c04fd430c8"), uuid.MustParse("6ba7b811-9dad-11d1-80b4-00c04fd430c8")},
	}
}

func TestMetaRoundTrip(t *testing.T) {
	m := sampleMeta()
	b, err := m.Encode()
	if err != nil {
		t.Fatal(err)
	}
	// A leader with three labels and two voters listed: the worst common case.
	if len(b) > 160 {
		t.Errorf("typical metadata is %d bytes; it should stay compact (well under %d)", len(b), MetaMaxSize)
	}
	got, err := DecodeMeta(b)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(*got) != fmt.Sprint(m) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", *got, m)
	}
	b2, _ := got.Encode()
	if !bytes.Equal(b, b2) {
		t.Fatal("encoding is not deterministic")
	}
}

func TestMetaTooLarge(t *testing.T) {
	m := sampleMeta()
	m.Labels = map[string]string{}
	for i := 0; i < 20; i++ {
		m.Labels[fmt.Sprintf("label-number-%02d", i)] = strings.Repeat("v", 40)
	}
	_, err := m.Encode()
	if !errors.Is(err, ErrMetaTooLarge) {
		t.Fatalf("want ErrMetaTooLarge, got %v", err)
	}
	if !strings.Contains(err.Error(), "labels take") {
		t.Errorf("error should say how much the labels take: %v", err)
	}
}

func TestMetaBadLabels(t *testing.T) {
	for _, kv := range [][2]string{{"", "x"}, {"-zone", "x"}, {"zone", "has space"}, {"zo ne", "x"}, {strings.Repeat("k", 64), "v"}, {"k", strings.Repeat("v", 64)}, {"k", "a=b"}} {
		m := sampleMeta()
		m.Labels = map[string]string{kv[0]: kv[1]}
		if _, err := m.Encode(); err == nil {
			t.Errorf("label %q=%q accepted", kv[0], kv[1])
		}
	}
}

// TestMetaUnknownExtensionSkipped proves the forward-compatibility rule: a
// newer agent's extra fields are ignored, not refused.
func TestMetaUnknownExtensionSkipped(t *testing.T) {
	m := sampleMeta()
	m.RaftAddr, m.Roles, m.APIPort, m.BootstrapExpect, m.Voters, m.Term = "", 0, 0, 0, nil, 0
	b, _ := m.Encode()
	b = b[:len(b)-1]                       // drop "0 extensions"
	b = append(b, 1, 99, 3, 'a', 'b', 'c') // one extension, tag 99, 3 bytes
	got, err := DecodeMeta(b)
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != m.ID || got.Labels["zone"] != "eu-1" {
		t.Fatalf("decoded %+v", got)
	}
}

func TestDecodeMetaGarbage(t *testing.T) {
	good, _ := (&Meta{ID: uuid.New(), Labels: map[string]string{"a": "b"}}).Encode()
	cases := map[string][]byte{
		"empty":         nil,
		"version":       {2, 0, 0},
		"truncated id":  {1, 1, 2, 3},
		"oversized":     append([]byte{1}, make([]byte, 600)...),
		"trailing":      append(append([]byte{}, good...), 0),
		"huge length":   append(append([]byte{1}, make([]byte, 16)...), 0, 0, 0xff, 0xff, 0xff, 0x0f),
		"half of valid": good[:len(good)/2],
	}
	for name, b := range cases {
		if _, err := DecodeMeta(b); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// FuzzDecodeMeta: whatever gossip brings, decoding never panics, and what it
// accepts re-encodes to an equivalent value.
func FuzzDecodeMeta(f *testing.F) {
	m := sampleMeta()
	b, _ := m.Encode()
	f.Add(b)
	f.Add([]byte{})
	f.Add([]byte{1})
	f.Add(b[:20])
	empty, _ := (&Meta{}).Encode()
	f.Add(empty)
	f.Fuzz(func(t *testing.T, data []byte) {
		got, err := DecodeMeta(data)
		if err != nil {
			return
		}
		again, err := got.Encode()
		if err != nil {
			t.Fatalf("decoded metadata does not re-encode: %v", err)
		}
		back, err := DecodeMeta(again)
		if err != nil || fmt.Sprint(*back) != fmt.Sprint(*got) {
			t.Fatalf("re-decode mismatch: %v", err)
		}
	})
}
