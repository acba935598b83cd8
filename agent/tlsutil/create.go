package tlsutil

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// File names `colony tls` writes.
const (
	CAFile    = "colony-agent-ca.pem"
	CAKeyFile = "colony-agent-ca-key.pem"
)

// CertFiles are the file names of a node's certificate and key.
func CertFiles(node string) (cert, key string) {
	return "colony-" + node + ".pem", "colony-" + node + "-key.pem"
}

// CAOptions configure CreateCA.
type CAOptions struct {
	Dir  string        // where the files go
	Name string        // common name (default "Colony Agent CA")
	TTL  time.Duration // validity (default 5 years)
}

// CreateCA writes a new self-signed ECDSA P-256 CA and its key (0600) into
// Dir and returns their paths. Existing files are never overwritten.
func CreateCA(o CAOptions) (certPath, keyPath string, err error) {
	if o.Name == "" {
		o.Name = "Colony Agent CA"
	}
	if o.TTL == 0 {
		o.TTL = 5 * 365 * 24 * time.Hour
	}
	if o.TTL < 0 {
		return "", "", errors.New("ca validity must be positive")
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", fmt.Errorf("generate ca key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return "", "", err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: o.Name, Organization: []string{"Colony"}},
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              now.Add(o.TTL),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return "", "", fmt.Errorf("create ca certificate: %w", err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return "", "", fmt.Errorf("encode ca key: %w", err)
	}
	certPath, keyPath = filepath.Join(o.Dir, CAFile), filepath.Join(o.Dir, CAKeyFile)
	if err := writeNew(map[string][]byte{certPath: pemBlock("CERTIFICATE", der), keyPath: pemBlock("EC PRIVATE KEY", keyDER)}); err != nil {
		return "", "", err
	}
	return certPath, keyPath, nil
}

// CertOptions configure CreateCert.
type CertOptions struct {
	Dir       string // where the files go
	CAFile    string // the CA certificate
	CAKeyFile string // and its key
	Node      string // node name: common name and a DNS name of the certificate
	// Client makes a client-only certificate (CLI, scripts): it can call
	// the API under mutual TLS but not serve as an agent.
	Client bool
	// ServerName is added to agent certificates (default DefaultServerName).
	ServerName string
	IPs        []net.IP // more addresses (127.0.0.1 is always included)
	DNSNames   []string // more DNS names ("localhost" is always included)
	TTL        time.Duration
	// NotBefore, when set, backdates the certificate (tests make expired
	// ones with it).
	NotBefore time.Time
}

// CreateCert writes a certificate signed by the CA and its key (0600).
func CreateCert(o CertOptions) (certPath, keyPath string, err error) {
	if o.Node == "" {
		return "", "", errors.New("no node name: set --node")
	}
	if !validFileName(o.Node) {
		return "", "", fmt.Errorf("node name %q: only letters, digits, '.', '_' and '-'", o.Node)
	}
	if o.TTL == 0 {
		o.TTL = 365 * 24 * time.Hour
	}
	if o.TTL < 0 {
		return "", "", errors.New("certificate validity must be positive")
	}
	if o.ServerName == "" {
		o.ServerName = DefaultServerName
	}
	caPEM, err := os.ReadFile(o.CAFile)
	if err != nil {
		return "", "", fmt.Errorf("read ca (create one with `colony tls ca create`): %w", err)
	}
	caKeyPEM, err := os.ReadFile(o.CAKeyFile)
	if err != nil {
		return "", "", fmt.Errorf("read ca key: %w", err)
	}
	ca, err := ParseKeyPair(caPEM, caKeyPEM)
	if err != nil {
		return "", "", fmt.Errorf("ca %s / key %s: %w", o.CAFile, o.CAKeyFile, err)
	}
	if !ca.Leaf.IsCA {
		return "", "", fmt.Errorf("%s is not a CA certificate", o.CAFile)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", fmt.Errorf("generate key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return "", "", err
	}
	start := o.NotBefore
	if start.IsZero() {
		start = time.Now().Add(-time.Minute)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: o.Node, Organization: []string{"Colony"}},
		NotBefore:    start,
		NotAfter:     start.Add(o.TTL),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		DNSNames:     append([]string{o.Node, o.ServerName, "localhost"}, o.DNSNames...),
		IPAddresses:  append([]net.IP{net.IPv4(127, 0, 0, 1)}, o.IPs...),
	}
	if o.Client {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
		tmpl.DNSNames, tmpl.IPAddresses = nil, nil
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Leaf, &key.PublicKey, ca.PrivateKey)
	if err != nil {
		return "", "", fmt.Errorf("sign certificate: %w", err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return "", "", fmt.Errorf("encode key: %w", err)
	}
	c, k := CertFiles(o.Node)
	certPath, keyPath = filepath.Join(o.Dir, c), filepath.Join(o.Dir, k)
	if err := writeNew(map[string][]byte{certPath: pemBlock("CERTIFICATE", der), keyPath: pemBlock("EC PRIVATE KEY", keyDER)}); err != nil {
		return "", "", err
	}
	return certPath, keyPath, nil
}

func newSerial() (*big.Int, error) {
	s, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("serial number: %w", err)
	}
	return s, nil
}

func validFileName(s string) bool {
	if len(s) > 128 || s == "." || s == ".." {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-') {
			return false
		}
	}
	return true
}

// writeNew writes every file with mode 0600, refusing to overwrite any.
func writeNew(files map[string][]byte) error {
	for p := range files {
		if _, err := os.Stat(p); err == nil {
			return fmt.Errorf("%s already exists: not overwriting it (move it away first)", p)
		}
	}
	for p, b := range files {
		f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return fmt.Errorf("write %s: %w", p, err)
		}
		if _, err := f.Write(b); err != nil {
			f.Close()
			return fmt.Errorf("write %s: %w", p, err)
		}
		if err := f.Close(); err != nil {
			return fmt.Errorf("write %s: %w", p, err)
		}
	}
	return nil
}
