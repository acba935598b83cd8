package consensus

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"unicode/utf8"
)

// ACL tokens. The state holds one record per token: a public accessor ID,
// the SHA-256 of the secret (never the secret: the log, snapshots and
// every voter's memory only ever see the hash), a policy and a
// description. Bootstrap creates the first management token and can
// happen once per cluster: the "bootstrapped" flag is part of the state,
// so the refusal is decided by the log, not by any one node.

// Token policies. A policy is a fixed set of rights (the agent package
// maps routes to them); there are no user-defined policies.
const (
	PolicyReadOnly   = "read-only"
	PolicyDeploy     = "deploy"
	PolicyOperator   = "operator"
	PolicyManagement = "management"
)

// Policies lists the policies a token can be created with.
var Policies = []string{PolicyReadOnly, PolicyDeploy, PolicyOperator, PolicyManagement}

// MaxACLDescriptionLen bounds a token's description.
const MaxACLDescriptionLen = 256

// MaxACLTokens bounds the token table: tokens are for people and
// pipelines, not one per request.
const MaxACLTokens = 10000

// ErrACLBootstrapped means the cluster's ACLs were bootstrapped already.
var ErrACLBootstrapped = errors.New("ACL bootstrap no longer allowed")

var (
	accessorRe = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)
	hashRe     = regexp.MustCompile(`^[0-9a-f]{64}$`)
)

// HashSecret is how a secret is stored and looked up: hex SHA-256.
func HashSecret(secret string) string {
	h := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(h[:])
}

// ValidatePolicy reports whether p names a policy.
func ValidatePolicy(p string) error {
	if !slices.Contains(Policies, p) {
		return fmt.Errorf("policy %q: want one of read-only, deploy, operator, management", p)
	}
	return nil
}

// ACLToken is one token as the state holds it.
type ACLToken struct {
	// AccessorID names the token in lists and deletes; it grants nothing.
	AccessorID string `json:"accessor_id"`
	// SecretHash is HashSecret of the secret.
	SecretHash  string `json:"secret_hash"`
	Policy      string `json:"policy"`
	Description string `json:"description"`
	CreateIndex uint64 `json:"create_index"`
}

// Validate checks a token record on its own.
func (t *ACLToken) Validate() error {
	var errs []error
	if !accessorRe.MatchString(t.AccessorID) {
		errs = append(errs, fmt.Errorf("accessor id %q: want a lowercase UUID", t.AccessorID))
	}
	if !hashRe.MatchString(t.SecretHash) {
		errs = append(errs, errors.New("secret hash: want 64 lowercase hex digits (SHA-256)"))
	}
	if err := ValidatePolicy(t.Policy); err != nil {
		errs = append(errs, err)
	}
	if len(t.Description) > MaxACLDescriptionLen || !utf8.ValidString(t.Description) {
		errs = append(errs, fmt.Errorf("description: want valid UTF-8 of at most %d bytes", MaxACLDescriptionLen))
	}
	return errors.Join(errs...)
}

// tableACL names the token table in per-table indexes.
const tableACL = "acl"

type aclState struct {
	bootstrapIndex uint64              // 0 until bootstrapped
	tokens         map[string]ACLToken // by accessor ID
	byHash         map[string]string   // secret hash → accessor ID
}

func newACLState() aclState {
	return aclState{tokens: map[string]ACLToken{}, byHash: map[string]string{}}
}

// ACLBootstrapIndex is the index at which ACLs were bootstrapped (0: not
// yet), and the ACL table index.
func (s *State) ACLBootstrapIndex() (uint64, uint64) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.acl.bootstrapIndex, s.tableIndex(tableACL)
}

// ACLTokenBySecretHash finds a token by the hash of its secret.
func (s *State) ACLTokenBySecretHash(hash string) (ACLToken, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	id, ok := s.acl.byHash[hash]
	if !ok {
		return ACLToken{}, false
	}
	return s.acl.tokens[id], true
}

// ACLTokens returns every token sorted by accessor ID, and the ACL index.
func (s *State) ACLTokens() ([]ACLToken, uint64) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]ACLToken, 0, len(s.acl.tokens))
	for _, k := range slices.Sorted(maps.Keys(s.acl.tokens)) {
		out = append(out, s.acl.tokens[k])
	}
	return out, s.tableIndex(tableACL)
}

func (a *aclState) put(t ACLToken, index uint64) error {
	if id, ok := a.byHash[t.SecretHash]; ok && id != t.AccessorID {
		return errors.New("a token with this secret exists already")
	}
	if _, ok := a.tokens[t.AccessorID]; !ok && len(a.tokens) >= MaxACLTokens {
		return fmt.Errorf("already %d tokens: delete unused ones first", MaxACLTokens)
	}
	if old, ok := a.tokens[t.AccessorID]; ok {
		delete(a.byHash, old.SecretHash)
		t.CreateIndex = old.CreateIndex
	} else {
		t.CreateIndex = index
	}
	a.tokens[t.AccessorID] = t
	a.byHash[t.SecretHash] = t.AccessorID
	return nil
}

// ACLBootstrap creates the first management token, once per cluster.
type ACLBootstrap struct {
	Token ACLToken `json:"token"`
}

// CommandType implements Command.
func (*ACLBootstrap) CommandType() CommandType { return CmdACLBootstrap }

// Validate implements Command.
func (c *ACLBootstrap) Validate() error {
	if c.Token.Policy != PolicyManagement {
		return fmt.Errorf("bootstrap token policy %q: must be management", c.Token.Policy)
	}
	return c.Token.Validate()
}

func (c *ACLBootstrap) apply(s *State, index uint64) (any, error) {
	if s.acl.bootstrapIndex != 0 {
		return nil, fmt.Errorf("%w: the cluster was bootstrapped at index %d (a management token holder can create more tokens)", ErrACLBootstrapped, s.acl.bootstrapIndex)
	}
	if err := s.acl.put(c.Token, index); err != nil {
		return nil, err
	}
	s.acl.bootstrapIndex = index
	s.tables[tableACL] = index
	return s.acl.tokens[c.Token.AccessorID], nil
}

// ACLTokenPut creates a token (or replaces the one with the same accessor).
type ACLTokenPut struct {
	Token ACLToken `json:"token"`
}

// CommandType implements Command.
func (*ACLTokenPut) CommandType() CommandType { return CmdACLTokenPut }

// Validate implements Command.
func (c *ACLTokenPut) Validate() error { return c.Token.Validate() }

func (c *ACLTokenPut) apply(s *State, index uint64) (any, error) {
	if s.acl.bootstrapIndex == 0 {
		return nil, errors.New("ACLs are not bootstrapped: run `colony acl bootstrap` first")
	}
	if err := s.acl.put(c.Token, index); err != nil {
		return nil, err
	}
	s.tables[tableACL] = index
	return s.acl.tokens[c.Token.AccessorID], nil
}

// ACLTokenDelete deletes a token. The last management token cannot be
// deleted: bootstrap happens once, so the cluster would be locked for good.
type ACLTokenDelete struct {
	AccessorID string `json:"accessor_id"`
}

// CommandType implements Command.
func (*ACLTokenDelete) CommandType() CommandType { return CmdACLTokenDelete }

// Validate implements Command.
func (c *ACLTokenDelete) Validate() error {
	if !accessorRe.MatchString(c.AccessorID) {
		return fmt.Errorf("accessor id %q: want a lowercase UUID (see colony acl token list)", c.AccessorID)
	}
	return nil
}

// ErrACLTokenNotFound means no token has the accessor ID given.
var ErrACLTokenNotFound = errors.New("no such ACL token")

func (c *ACLTokenDelete) apply(s *State, index uint64) (any, error) {
	t, ok := s.acl.tokens[c.AccessorID]
	if !ok {
		return nil, fmt.Errorf("%w: %s", ErrACLTokenNotFound, c.AccessorID)
	}
	if t.Policy == PolicyManagement {
		n := 0
		for _, o := range s.acl.tokens {
			if o.Policy == PolicyManagement {
				n++
			}
		}
		if n == 1 {
			return nil, errors.New("this is the last management token: create another one before deleting it")
		}
	}
	delete(s.acl.tokens, c.AccessorID)
	delete(s.acl.byHash, t.SecretHash)
	s.tables[tableACL] = index
	return DeleteResult{Existed: true}, nil
}

// aclSnapshot is the token table in a snapshot.
type aclSnapshot struct {
	BootstrapIndex uint64     `json:"bootstrap_index"`
	Tokens         []ACLToken `json:"tokens"`
}

func (a *aclState) snapshot() *aclSnapshot {
	if a.bootstrapIndex == 0 && len(a.tokens) == 0 {
		return nil // keeps snapshots of clusters without ACLs as they were
	}
	out := &aclSnapshot{BootstrapIndex: a.bootstrapIndex, Tokens: make([]ACLToken, 0, len(a.tokens))}
	for _, k := range slices.Sorted(maps.Keys(a.tokens)) {
		out.Tokens = append(out.Tokens, a.tokens[k])
	}
	return out
}

// restore rebuilds the table; a nil snapshot (written before ACLs
// existed) is an empty table.
func (snap *aclSnapshot) restore() (aclState, error) {
	a := newACLState()
	if snap == nil {
		return a, nil
	}
	a.bootstrapIndex = snap.BootstrapIndex
	for _, t := range snap.Tokens {
		if err := t.Validate(); err != nil {
			return a, fmt.Errorf("acl token %s: %w", t.AccessorID, err)
		}
		a.tokens[t.AccessorID] = t
		a.byHash[t.SecretHash] = t.AccessorID
	}
	return a, nil
}
