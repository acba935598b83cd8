package tlsutil

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestCreateAndLoad(t *testing.T) {
	dir := t.TempDir()
	ca, cakey, err := CreateCA(CAOptions{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := CreateCA(CAOptions{Dir: dir}); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Fatalf("second CA in the same dir: %v", err)
	}
	cert, key, err := CreateCert(CertOptions{Dir: dir, CAFile: ca, CAKeyFile: cakey, Node: "n1"})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{ca, cakey, cert, key} {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %v, want 0600", p, st.Mode().Perm())
		}
	}
	h, err := Load(Config{CAFile: ca, CertFile: cert, KeyFile: key}, true)
	if err != nil {
		t.Fatal(err)
	}
	leaf := h.Certificate().Leaf
	if !strings.Contains(strings.Join(leaf.DNSNames, ","), DefaultServerName) || leaf.Subject.CommonName != "n1" {
		t.Fatalf("certificate names %v cn %q", leaf.DNSNames, leaf.Subject.CommonName)
	}
	if _, err := Load(Config{CAFile: ca, CertFile: cert, KeyFile: key, ServerName: "other.name"}, true); err == nil || !strings.Contains(err.Error(), `"other.name"`) {
		t.Fatalf("wrong server name: %v", err)
	}
	for _, bad := range []string{"", "../x", "a/b", strings.Repeat("x", 200)} {
		if _, _, err := CreateCert(CertOptions{Dir: dir, CAFile: ca, CAKeyFile: cakey, Node: bad}); err == nil {
			t.Errorf("node name %q accepted", bad)
		}
	}
	// A node certificate is not a CA.
	if _, _, err := CreateCert(CertOptions{Dir: dir, CAFile: cert, CAKeyFile: key, Node: "n2"}); err == nil || !strings.Contains(err.Error(), "not a CA") {
		t.Fatalf("signing with a leaf: %v", err)
	}
	if _, _, err := CreateCert(CertOptions{Dir: dir, CAFile: filepath.Join(dir, "nope.pem"), CAKeyFile: cakey, Node: "n3"}); err == nil || !strings.Contains(err.Error(), "colony tls ca create") {
		t.Fatalf("missing CA: %v", err)
	}
	if err := (Config{VerifyIncoming: true}).Validate(); err == nil {
		t.Fatal("verify-incoming without files accepted")
	}
	if err := (Config{CertFile: cert}).Validate(); err == nil || !strings.Contains(err.Error(), "--tls-ca") {
		t.Fatalf("cert alone: %v", err)
	}
	// Not yet valid.
	fc, fk, err := CreateCert(CertOptions{Dir: dir, CAFile: ca, CAKeyFile: cakey, Node: "future", NotBefore: time.Now().Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Load(Config{CAFile: ca, CertFile: fc, KeyFile: fk}, true); err == nil || !strings.Contains(err.Error(), "not valid before") {
		t.Fatalf("future certificate: %v", err)
	}
}

// FuzzParseKeyPair: any PEM input is parsed or refused, never a panic.
func FuzzParseKeyPair(f *testing.F) {
	dir := f.TempDir()
	ca, cakey, err := CreateCA(CAOptions{Dir: dir})
	if err != nil {
		f.Fatal(err)
	}
	c, _ := os.ReadFile(ca)
	k, _ := os.ReadFile(cakey)
	f.Add(c, k)
	f.Add(c, c)
	f.Add([]byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"), k)
	f.Fuzz(func(t *testing.T, cert, key []byte) {
		kp, err := ParseKeyPair(cert, key)
		if err == nil && kp.Leaf == nil {
			t.Fatal("parsed pair without a leaf")
		}
	})
}
