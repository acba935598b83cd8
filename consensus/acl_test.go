package consensus

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
)

func testToken(n byte, policy string) ACLToken {
	id := strings.Repeat(string('a'+n%6), 8) + "-0000-4000-8000-000000000000"
	return ACLToken{AccessorID: id, SecretHash: HashSecret("secret-" + string('a'+n)), Policy: policy, Description: "t"}
}

func TestACLBootstrapOnceAndTokens(t *testing.T) {
	fsm := NewFSM(NewState(), nil)
	st := fsm.State()
	// No token can be created before bootstrap.
	if r := applyCmd(t, fsm, 1, &ACLTokenPut{Token: testToken(1, PolicyReadOnly)}); r.Err == nil {
		t.Fatal("token created before bootstrap")
	}
	boot := testToken(0, PolicyManagement)
	if r := applyCmd(t, fsm, 2, &ACLBootstrap{Token: boot}); r.Err != nil {
		t.Fatalf("bootstrap: %v", r.Err)
	}
	if bi, idx := st.ACLBootstrapIndex(); bi != 2 || idx != 2 {
		t.Fatalf("bootstrap index %d, table index %d", bi, idx)
	}
	// The second bootstrap is refused, by every voter alike (it is decided in apply).
	r := applyCmd(t, fsm, 3, &ACLBootstrap{Token: testToken(2, PolicyManagement)})
	if !errors.Is(r.Err, ErrACLBootstrapped) || !strings.Contains(r.Err.Error(), "index 2") {
		t.Fatalf("second bootstrap: %v", r.Err)
	}
	ro := testToken(1, PolicyReadOnly)
	if r := applyCmd(t, fsm, 4, &ACLTokenPut{Token: ro}); r.Err != nil {
		t.Fatal(r.Err)
	}
	got, ok := st.ACLTokenBySecretHash(HashSecret("secret-b"))
	if !ok || got.Policy != PolicyReadOnly || got.CreateIndex != 4 {
		t.Fatalf("lookup: %+v %v", got, ok)
	}
	if _, ok := st.ACLTokenBySecretHash(HashSecret("secret-z")); ok {
		t.Fatal("unknown secret found")
	}
	// A secret already in use under another accessor is refused.
	dup := testToken(3, PolicyOperator)
	dup.SecretHash = ro.SecretHash
	if r := applyCmd(t, fsm, 5, &ACLTokenPut{Token: dup}); r.Err == nil {
		t.Fatal("duplicate secret accepted")
	}
	// The last management token cannot be deleted.
	if r := applyCmd(t, fsm, 6, &ACLTokenDelete{AccessorID: boot.AccessorID}); r.Err == nil || !strings.Contains(r.Err.Error(), "last management") {
		t.Fatalf("last management token deleted: %v", r.Err)
	}
	if r := applyCmd(t, fsm, 7, &ACLTokenDelete{AccessorID: ro.AccessorID}); r.Err != nil {
		t.Fatal(r.Err)
	}
	if _, ok := st.ACLTokenBySecretHash(ro.SecretHash); ok {
		t.Fatal("deleted token still resolves")
	}
	if r := applyCmd(t, fsm, 8, &ACLTokenDelete{AccessorID: ro.AccessorID}); !errors.Is(r.Err, ErrACLTokenNotFound) {
		t.Fatalf("deleting a missing token: %v", r.Err)
	}
	if ts, idx := st.ACLTokens(); len(ts) != 1 || idx != 7 {
		t.Fatalf("tokens %v @%d", ts, idx)
	}
}

func TestACLCommandValidation(t *testing.T) {
	good := testToken(1, PolicyDeploy)
	for name, c := range map[string]Command{
		"bootstrap not management": &ACLBootstrap{Token: good},
		"bad policy":               &ACLTokenPut{Token: ACLToken{AccessorID: good.AccessorID, SecretHash: good.SecretHash, Policy: "root"}},
		"agent policy":             &ACLTokenPut{Token: ACLToken{AccessorID: good.AccessorID, SecretHash: good.SecretHash, Policy: "agent"}},
		"raw secret, not a hash":   &ACLTokenPut{Token: ACLToken{AccessorID: good.AccessorID, SecretHash: "s3cret", Policy: PolicyDeploy}},
		"bad accessor":             &ACLTokenPut{Token: ACLToken{AccessorID: "x", SecretHash: good.SecretHash, Policy: PolicyDeploy}},
		"long description":         &ACLTokenPut{Token: ACLToken{AccessorID: good.AccessorID, SecretHash: good.SecretHash, Policy: PolicyDeploy, Description: strings.Repeat("d", 300)}},
		"delete bad accessor":      &ACLTokenDelete{AccessorID: "../x"},
	} {
		if _, err := EncodeCommand(c); !errors.Is(err, ErrInvalidCommand) {
			t.Errorf("%s: encoded (%v)", name, err)
		}
	}
	for _, c := range []Command{&ACLBootstrap{Token: testToken(0, PolicyManagement)}, &ACLTokenPut{Token: good}, &ACLTokenDelete{AccessorID: good.AccessorID}} {
		b := mustEncode(t, c)
		if CommandType(b[1]) < CmdACLBootstrap {
			t.Fatalf("%s has type %d: ACL commands come after the older ones", c.CommandType(), b[1])
		}
		back, err := DecodeCommand(b)
		if err != nil || !bytes.Equal(mustEncode(t, back), b) {
			t.Fatalf("%s round trip: %v", c.CommandType(), err)
		}
	}
}

func TestACLSnapshot(t *testing.T) {
	fsm := NewFSM(NewState(), nil)
	applyCmd(t, fsm, 1, &ACLBootstrap{Token: testToken(0, PolicyManagement)})
	applyCmd(t, fsm, 2, &ACLTokenPut{Token: testToken(1, PolicyDeploy)})
	snap, err := fsm.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var sink memSink
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(sink.Bytes(), []byte("secret-")) {
		t.Fatal("a secret reached the snapshot")
	}
	other := NewFSM(NewState(), nil)
	if err := other.Restore(io.NopCloser(bytes.NewReader(sink.Bytes()))); err != nil {
		t.Fatal(err)
	}
	if got, ok := other.State().ACLTokenBySecretHash(HashSecret("secret-b")); !ok || got.Policy != PolicyDeploy {
		t.Fatalf("restored token: %+v %v", got, ok)
	}
	// Bootstrap stays done after a restore.
	if r := applyCmd(t, other, 3, &ACLBootstrap{Token: testToken(2, PolicyManagement)}); !errors.Is(r.Err, ErrACLBootstrapped) {
		t.Fatalf("bootstrap after restore: %v", r.Err)
	}

	// A snapshot written before ACLs existed (no "acl" field) still reads,
	// with ACLs not bootstrapped.
	old := append([]byte{snapshotFormatV1}, []byte(`{"index":5,"tables":{"settings":5},"settings":[{"key":"a","value":"1","create_index":5,"modify_index":5}]}`)...)
	if err := other.Restore(io.NopCloser(bytes.NewReader(old))); err != nil {
		t.Fatalf("old snapshot: %v", err)
	}
	if bi, _ := other.State().ACLBootstrapIndex(); bi != 0 {
		t.Fatalf("old snapshot restored as bootstrapped at %d", bi)
	}
	if ts, _ := other.State().ACLTokens(); len(ts) != 0 {
		t.Fatalf("old snapshot restored %d tokens", len(ts))
	}
	// A snapshot with a malformed token is refused.
	bad := append([]byte{snapshotFormatV1}, []byte(`{"index":5,"tables":{},"settings":[],"acl":{"bootstrap_index":1,"tokens":[{"accessor_id":"x","secret_hash":"y","policy":"management"}]}}`)...)
	if err := other.Restore(io.NopCloser(bytes.NewReader(bad))); err == nil {
		t.Fatal("malformed token restored")
	}
}
