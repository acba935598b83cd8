// Package tlsutil loads, checks and reloads the TLS material of the agent's
// non-gossip traffic (HTTP API, Raft, agent-to-agent calls) and creates a
// small private CA and node certificates for `colony tls`.
//
// Peers are checked against one fixed name, not their address: every node
// certificate carries the DNS name "server.colony" (DefaultServerName), and
// every TLS client (agents, the CLI) asks for that name. A certificate
// signed by the cluster's CA without that name (a client certificate) can
// call the API under mutual TLS but cannot pose as an agent.
package tlsutil

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"
)

// DefaultServerName is the name every agent certificate carries and every
// client verifies.
const DefaultServerName = "server.colony"

// Config names the TLS files. All three files are needed for TLS; none
// means plain TCP.
type Config struct {
	CAFile   string // PEM CA certificate(s) peers must be signed by
	CertFile string // PEM certificate of this node (or CLI user)
	KeyFile  string // PEM private key of CertFile
	// VerifyIncoming requires every client (agents, CLI) to present a
	// certificate signed by the CA: mutual TLS.
	VerifyIncoming bool
	// ServerName is the name servers' certificates must carry (default
	// DefaultServerName).
	ServerName string
}

// Enabled reports whether any TLS file is configured.
func (c Config) Enabled() bool { return c.CAFile != "" || c.CertFile != "" || c.KeyFile != "" }

// Validate checks the flags' combination without reading files.
func (c Config) Validate() error {
	if !c.Enabled() {
		if c.VerifyIncoming {
			return errors.New("--tls-verify-incoming needs --tls-ca, --tls-cert and --tls-key")
		}
		return nil
	}
	var missing []string
	if c.CAFile == "" {
		missing = append(missing, "--tls-ca")
	}
	if c.CertFile == "" {
		missing = append(missing, "--tls-cert")
	}
	if c.KeyFile == "" {
		missing = append(missing, "--tls-key")
	}
	if len(missing) > 0 {
		return fmt.Errorf("TLS needs --tls-ca, --tls-cert and --tls-key together: missing %s", strings.Join(missing, ", "))
	}
	return nil
}

func (c Config) serverName() string {
	if c.ServerName != "" {
		return c.ServerName
	}
	return DefaultServerName
}

// Holder keeps the current certificate; Reload swaps it (SIGHUP). The CA
// pool is read once: a new CA needs a restart.
type Holder struct {
	cfg  Config
	pool *x509.CertPool
	// server means the certificate must be a valid server certificate for
	// the server name (agents); the CLI's client certificate need not.
	server bool

	mu   sync.RWMutex
	cert *tls.Certificate
}

// Load reads and checks the CA, certificate and key. For an agent
// (server true) the certificate must be signed by the CA, valid now, and
// carry the server name.
func Load(cfg Config, server bool) (*Holder, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	caPEM, err := os.ReadFile(cfg.CAFile)
	if err != nil {
		return nil, fmt.Errorf("tls ca: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("tls ca %s: no PEM certificate in the file", cfg.CAFile)
	}
	h := &Holder{cfg: cfg, pool: pool, server: server}
	if h.cert, err = h.load(time.Now()); err != nil {
		return nil, err
	}
	return h, nil
}

// load reads the key pair and checks it.
func (h *Holder) load(now time.Time) (*tls.Certificate, error) {
	certPEM, err := os.ReadFile(h.cfg.CertFile)
	if err != nil {
		return nil, fmt.Errorf("tls cert: %w", err)
	}
	keyPEM, err := os.ReadFile(h.cfg.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("tls key: %w", err)
	}
	cert, err := ParseKeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("tls cert %s / key %s: %w", h.cfg.CertFile, h.cfg.KeyFile, err)
	}
	if err := CheckValidity(cert.Leaf, now); err != nil {
		return nil, fmt.Errorf("tls cert %s: %w", h.cfg.CertFile, err)
	}
	opts := x509.VerifyOptions{Roots: h.pool, CurrentTime: now, Intermediates: x509.NewCertPool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	for _, der := range cert.Certificate[1:] {
		if c, err := x509.ParseCertificate(der); err == nil {
			opts.Intermediates.AddCert(c)
		}
	}
	if h.server {
		opts.DNSName = h.cfg.serverName()
		opts.KeyUsages = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	}
	if _, err := cert.Leaf.Verify(opts); err != nil {
		var host x509.HostnameError
		if errors.As(err, &host) {
			return nil, fmt.Errorf("tls cert %s is not valid for %q, the name peers check (a --client certificate cannot run an agent): create a node certificate with `colony tls cert create --node NAME`, or set --tls-server-name", h.cfg.CertFile, h.cfg.serverName())
		}
		return nil, fmt.Errorf("tls cert %s is not usable with the CA %s: %w", h.cfg.CertFile, h.cfg.CAFile, err)
	}
	return cert, nil
}

// ParseKeyPair parses a PEM certificate (chain) and its private key.
func ParseKeyPair(certPEM, keyPEM []byte) (*tls.Certificate, error) {
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("invalid key pair: %w", err)
	}
	if cert.Leaf == nil {
		if cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return nil, fmt.Errorf("invalid certificate: %w", err)
		}
	}
	return &cert, nil
}

// CheckValidity refuses a certificate outside its validity period, saying
// which end was passed.
func CheckValidity(c *x509.Certificate, now time.Time) error {
	switch {
	case now.After(c.NotAfter):
		return fmt.Errorf("certificate %q expired at %s: create a new one (colony tls cert create)", c.Subject.CommonName, c.NotAfter.UTC().Format(time.RFC3339))
	case now.Before(c.NotBefore):
		return fmt.Errorf("certificate %q is not valid before %s (check this host's clock)", c.Subject.CommonName, c.NotBefore.UTC().Format(time.RFC3339))
	}
	return nil
}

// Reload reads the certificate and key again. On error the current pair
// stays in use.
func (h *Holder) Reload() error {
	cert, err := h.load(time.Now())
	if err != nil {
		return err
	}
	h.mu.Lock()
	h.cert = cert
	h.mu.Unlock()
	return nil
}

// Certificate is the pair in use.
func (h *Holder) Certificate() *tls.Certificate {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return h.cert
}

// ServerConfig is the tls.Config of the API and Raft listeners.
func (h *Holder) ServerConfig() *tls.Config {
	auth := tls.VerifyClientCertIfGiven
	if h.cfg.VerifyIncoming {
		auth = tls.RequireAndVerifyClientCert
	}
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		ClientCAs:  h.pool,
		ClientAuth: auth,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return h.Certificate(), nil
		},
	}
}

// ClientConfig is the tls.Config of calls to agents: the server must show
// a certificate from the CA carrying the server name; this side presents
// its own certificate.
func (h *Holder) ClientConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		RootCAs:    h.pool,
		ServerName: h.cfg.serverName(),
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return h.Certificate(), nil
		},
	}
}

// ClientOnlyConfig is the tls.Config of a CLI given only a CA: it checks
// the agent but presents no certificate (enough unless
// --tls-verify-incoming).
func ClientOnlyConfig(caFile, serverName string) (*tls.Config, error) {
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("tls ca: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("tls ca %s: no PEM certificate in the file", caFile)
	}
	if serverName == "" {
		serverName = DefaultServerName
	}
	return &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool, ServerName: serverName}, nil
}

// pemBlock encodes one PEM block.
func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}
