package consensus

import (
	"errors"
	"strings"
	"testing"
)

func TestCommandRoundTrip(t *testing.T) {
	for _, c := range []Command{
		&SetSetting{Key: "a", Value: ""},
		&SetSetting{Key: "scaling/cool-down.v2", Value: "multi\nline\tvalue ✓"},
		&DeleteSetting{Key: "a"},
		&SetMonitorPlanPart{Stage: 0xfeed, Seq: 1, Total: 3, Data: []byte{0, 1, 0xff}},
	} {
		b, err := EncodeCommand(c)
		if err != nil {
			t.Fatalf("encode %#v: %v", c, err)
		}
		if b[0] != CommandFormatV1 || CommandType(b[1]) != c.CommandType() {
			t.Fatalf("header % x for %s", b[:2], c.CommandType())
		}
		got, err := DecodeCommand(b)
		if err != nil {
			t.Fatalf("decode %s: %v", c.CommandType(), err)
		}
		b2, _ := EncodeCommand(got)
		if string(b2) != string(b) {
			t.Fatalf("round trip changed %q to %q", b, b2)
		}
	}
}

func TestCommandDecodeErrors(t *testing.T) {
	good, err := EncodeCommand(&SetSetting{Key: "k", Value: "v"})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		in   []byte
		want error
	}{
		{"nil", nil, ErrInvalidCommand},
		{"one byte", []byte{1}, ErrInvalidCommand},
		{"version 0", append([]byte{0}, good[1:]...), ErrUnknownCommandVersion},
		{"version 2", append([]byte{2}, good[1:]...), ErrUnknownCommandVersion},
		{"type 0", append([]byte{1, 0}, good[2:]...), ErrUnknownCommandType},
		{"type 200", append([]byte{1, 200}, good[2:]...), ErrUnknownCommandType},
		{"empty body", []byte{1, 1}, ErrInvalidCommand},
		{"truncated", good[:len(good)-3], ErrInvalidCommand},
		{"garbage", []byte{1, 1, 0xff, 0xfe, 0x00}, ErrInvalidCommand},
		{"trailing data", append(append([]byte{}, good...), []byte(`{}`)...), ErrInvalidCommand},
		{"unknown field", []byte(`` + "\x01\x01" + `{"key":"k","value":"v","ttl":5}`), ErrInvalidCommand},
		{"wrong type", []byte("\x01\x01" + `{"key":5}`), ErrInvalidCommand},
		{"invalid key", []byte("\x01\x01" + `{"key":"-bad","value":"v"}`), ErrInvalidCommand},
		{"empty key", []byte("\x01\x02" + `{"key":""}`), ErrInvalidCommand},
		{"control char", []byte("\x01\x01" + `{"key":"k","value":"\u0007"}`), ErrInvalidCommand},
		{"too large", append([]byte{1, 1}, make([]byte, MaxCommandSize)...), ErrInvalidCommand},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := DecodeCommand(tc.in)
			if !errors.Is(err, tc.want) || c != nil {
				t.Fatalf("got %v, %v; want %v", c, err, tc.want)
			}
		})
	}
}

func TestSettingValidation(t *testing.T) {
	for _, k := range []string{"a", "A9", "a.b_c-d/e", strings.Repeat("k", MaxSettingKeyLen)} {
		if err := ValidateSettingKey(k); err != nil {
			t.Errorf("key %q rejected: %v", k, err)
		}
	}
	for _, k := range []string{"", "-a", "a-", "a b", "a=b", "é", strings.Repeat("k", MaxSettingKeyLen+1)} {
		if err := ValidateSettingKey(k); err == nil {
			t.Errorf("key %q accepted", k)
		}
	}
	for _, v := range []string{"", "x", "tab\tand\nnewline", "ünïcödé", strings.Repeat("v", MaxSettingValueLen)} {
		if err := ValidateSettingValue(v); err != nil {
			t.Errorf("value %q rejected: %v", v, err)
		}
	}
	for _, v := range []string{"\x00", "\r", "\xff", strings.Repeat("v", MaxSettingValueLen+1)} {
		if err := ValidateSettingValue(v); err == nil {
			t.Errorf("value %q accepted", v)
		}
	}
	if _, err := EncodeCommand(&SetSetting{Key: "bad key", Value: "v"}); !errors.Is(err, ErrInvalidCommand) {
		t.Fatalf("encode of an invalid setting: %v", err)
	}
}

// FuzzDecodeCommand checks that no input makes decoding panic, and that
// whatever decodes re-encodes to something that decodes the same.
func FuzzDecodeCommand(f *testing.F) {
	for _, c := range []Command{&SetSetting{Key: "k", Value: "v"}, &DeleteSetting{Key: "k"},
		&ACLBootstrap{Token: testToken(0, PolicyManagement)}, &ACLTokenPut{Token: testToken(1, PolicyReadOnly)},
		&ACLTokenDelete{AccessorID: testToken(1, PolicyReadOnly).AccessorID},
		&SetMonitorPlanPart{Stage: 1, Seq: 0, Total: 2, Data: []byte("x")}} {
		b, _ := EncodeCommand(c)
		f.Add(b)
	}
	f.Add([]byte{})
	f.Add([]byte{1})
	f.Add([]byte{1, 1})
	f.Add([]byte{9, 1, '{', '}'})
	f.Add([]byte{1, 99, '{', '}'})
	f.Add([]byte("\x01\x01{\"key\":\"k\",\"value\":\"v\"}garbage"))
	f.Add([]byte("\x01\x02{\"key\":null}"))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := DecodeCommand(b)
		if err != nil {
			if c != nil {
				t.Fatal("command returned with an error")
			}
			return
		}
		again, err := EncodeCommand(c)
		if err != nil {
			t.Fatalf("decoded command does not re-encode: %v", err)
		}
		if _, err := DecodeCommand(again); err != nil {
			t.Fatalf("re-encoded command does not decode: %v", err)
		}
	})
}
