package agent

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"colony/gossip"
)

// keyringFile holds the gossip keyring in the data dir, as Serf's keyring
// file does: a JSON array of base64 keys, the primary (encrypting) key
// first. A restarted node keeps the keys installed while it ran.
const keyringFile = "keyring.json"

// Keyring operations.
const (
	KeyringInstall = "install"
	KeyringUse     = "use"
	KeyringRemove  = "remove"
)

// KeyRequest is the body of the keyring operations.
type KeyRequest struct {
	Key string `json:"key"`
}

// NodeKeyring is one node's keyring, or why the operation failed there.
type NodeKeyring struct {
	Node    string   `json:"node"`
	Primary string   `json:"primary,omitempty"`
	Keys    []string `json:"keys,omitempty"`
	Error   string   `json:"error,omitempty"`
}

// KeyringResponse answers the cluster-wide keyring endpoints.
type KeyringResponse struct {
	Op       string `json:"op"`        // list, install, use or remove
	NumNodes int    `json:"num_nodes"` // live members asked
	NumOK    int    `json:"num_ok"`    // members that succeeded
	// Keys counts, per key, the nodes that hold it; PrimaryKeys the nodes
	// that encrypt with it.
	Keys        map[string]int `json:"keys"`
	PrimaryKeys map[string]int `json:"primary_keys"`
	Nodes       []NodeKeyring  `json:"nodes"`
	// Error says how many nodes failed, or, alone, why nothing was done.
	Error string `json:"error,omitempty"`
}

// Failed lists the failed nodes' errors, one line each ("" when none).
func (r *KeyringResponse) Failed() string {
	var lines []string
	for _, n := range r.Nodes {
		if n.Error != "" {
			lines = append(lines, n.Node+": "+n.Error)
		}
	}
	return strings.Join(lines, "\n")
}

// parseKeyringFile reads the keyring file's contents: at least one valid
// key, no duplicates.
func parseKeyringFile(b []byte) ([][]byte, error) {
	var enc []string
	if err := json.Unmarshal(b, &enc); err != nil {
		return nil, fmt.Errorf("not a JSON array of base64 keys: %w", err)
	}
	if len(enc) == 0 {
		return nil, errors.New("no keys")
	}
	seen := map[string]bool{}
	keys := make([][]byte, 0, len(enc))
	for i, e := range enc {
		k, err := DecodeKey(e)
		if err != nil {
			return nil, fmt.Errorf("key %d: %w", i+1, err)
		}
		if seen[string(k)] {
			return nil, fmt.Errorf("key %d is listed twice", i+1)
		}
		seen[string(k)] = true
		keys = append(keys, k)
	}
	return keys, nil
}

// initKeyring returns the gossip keys, primary first: the keyring file's
// if it exists (it wins over --encrypt, as in Serf and Consul), else the
// --encrypt key, which is then saved to the file. None means no encryption.
func (a *Agent) initKeyring() ([][]byte, error) {
	p := filepath.Join(a.dir.path, keyringFile)
	b, err := os.ReadFile(p)
	switch {
	case err == nil:
		keys, err := parseKeyringFile(b)
		if err != nil {
			return nil, fmt.Errorf("gossip keyring %s: %w (fix or delete it; --encrypt then starts a new one)", p, err)
		}
		if a.cfg.EncryptKey != "" {
			k, _ := DecodeKey(a.cfg.EncryptKey) // validated
			found := false
			for _, have := range keys {
				found = found || string(have) == string(k)
			}
			if !found {
				a.logger.Warn("--encrypt key is not in the saved keyring: using the keyring (manage keys with `colony keyring`)", "subsystem", "gossip", "keyring", p)
			}
		}
		return keys, nil
	case !errors.Is(err, os.ErrNotExist):
		return nil, fmt.Errorf("gossip keyring: %w", err)
	}
	if a.cfg.EncryptKey == "" {
		return nil, nil
	}
	k, _ := DecodeKey(a.cfg.EncryptKey) // validated
	if err := a.saveKeyring([]string{base64.StdEncoding.EncodeToString(k)}); err != nil {
		return nil, err
	}
	return [][]byte{k}, nil
}

func (a *Agent) saveKeyring(keys []string) error {
	b, err := json.Marshal(keys)
	if err != nil {
		return err
	}
	if err := writeFileAtomic(filepath.Join(a.dir.path, keyringFile), append(b, '\n')); err != nil {
		return fmt.Errorf("save gossip keyring: %w", err)
	}
	return nil
}

// localKeyring applies one operation ("" lists) to this node's keyring and
// saves it.
func (a *Agent) localKeyring(op string, key []byte) (NodeKeyring, error) {
	a.keyringMu.Lock()
	defer a.keyringMu.Unlock()
	var err error
	switch op {
	case "":
	case KeyringInstall:
		err = a.gossip.InstallKey(key)
	case KeyringUse:
		err = a.gossip.UseKey(key)
	case KeyringRemove:
		err = a.gossip.RemoveKey(key)
	default:
		err = fmt.Errorf("unknown keyring operation %q: want install, use or remove", op)
	}
	if err != nil {
		return NodeKeyring{}, err
	}
	kr, err := a.gossip.Keys()
	if err != nil {
		return NodeKeyring{}, err
	}
	if op != "" {
		if err := a.saveKeyring(kr.Keys); err != nil {
			return NodeKeyring{}, err
		}
		a.logger.Info("gossip keyring changed", "subsystem", "gossip", "op", op, "keys", len(kr.Keys))
	}
	return NodeKeyring{Node: a.cfg.NodeName, Primary: kr.Primary, Keys: kr.Keys}, nil
}

func (a *Agent) keyringRoutes(r *router) {
	// Gossip keys are cluster secrets: listing them needs the same access
	// as changing them. The fan-out calls the nodes on behalf of the
	// caller's token, so the per-node endpoints need that access too.
	// This node only (the fan-out's target).
	r.handle("GET", "/v1/agent/keyring", AccessOperator, a.handleLocalKeyring(""))
	for _, op := range []string{KeyringInstall, KeyringUse, KeyringRemove} {
		r.handle("PUT", "/v1/agent/keyring/"+op, AccessOperator, a.handleLocalKeyring(op))
	}
	// The whole cluster.
	r.handle("GET", "/v1/keyring", AccessOperator, a.handleKeyring(""))
	for _, m := range []string{"PUT", "POST"} {
		r.handle(m, "/v1/keyring/install", AccessOperator, a.handleKeyring(KeyringInstall))
		r.handle(m, "/v1/keyring/use", AccessOperator, a.handleKeyring(KeyringUse))
	}
	for _, m := range []string{"PUT", "DELETE"} {
		r.handle(m, "/v1/keyring/remove", AccessOperator, a.handleKeyring(KeyringRemove))
	}
}

// keyFromBody decodes {"key": "..."} for an operation that takes a key
// (op "" lists the keys and takes none); it has written the error if not
// ok.
func keyFromBody(op string, w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	if op == "" {
		return nil, true
	}
	var req KeyRequest
	if !decodeBody(w, r, &req) {
		return nil, false
	}
	if req.Key == "" {
		writeError(w, http.StatusBadRequest, errors.New(`no key: want {"key": "<base64 key>"}`))
		return nil, false
	}
	k, err := DecodeKey(req.Key)
	if err != nil {
		writeError(w, http.StatusBadRequest, err)
		return nil, false
	}
	return k, true
}

func keyringStatus(err error) int {
	switch {
	case errors.Is(err, gossip.ErrNoEncryption):
		return http.StatusConflict
	case errors.Is(err, gossip.ErrPrimaryKey):
		return http.StatusConflict
	}
	return http.StatusBadRequest
}

func (a *Agent) handleLocalKeyring(op string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		key, ok := keyFromBody(op, w, r)
		if !ok {
			return
		}
		nk, err := a.localKeyring(op, key)
		if err != nil {
			writeError(w, keyringStatus(err), err)
			return
		}
		writeJSON(w, http.StatusOK, nk)
	}
}

// handleKeyring applies an operation on every live member, as Serf's
// keyring queries do, over the members' APIs, and reports per node. Any
// failure answers 500 with the same report.
func (a *Agent) handleKeyring(op string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		key, ok := keyFromBody(op, w, r)
		if !ok {
			return
		}
		// Refuse at once what would fail everywhere.
		local, err := a.gossip.Keys()
		if err != nil {
			writeError(w, keyringStatus(err), err)
			return
		}
		if op == KeyringRemove && local.Primary == base64.StdEncoding.EncodeToString(key) {
			writeError(w, http.StatusConflict, fmt.Errorf("refusing to remove the primary key (the key every node encrypts with): %w", gossip.ErrPrimaryKey))
			return
		}
		resp := a.keyringFanOut(r.Context(), op, key)
		code := http.StatusOK
		if resp.NumOK < resp.NumNodes {
			code = http.StatusInternalServerError
			resp.Error = fmt.Sprintf("keyring %s failed on %d of %d nodes: %s", resp.Op, resp.NumNodes-resp.NumOK, resp.NumNodes, strings.ReplaceAll(resp.Failed(), "\n", "; "))
		}
		writeJSON(w, code, resp)
	}
}

func (a *Agent) keyringFanOut(ctx context.Context, op string, key []byte) *KeyringResponse {
	var members []gossip.Member
	for _, m := range a.gossip.Members() {
		if m.Status == gossip.StatusAlive || m.Status == gossip.StatusSuspect {
			members = append(members, m)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	results := make([]NodeKeyring, len(members))
	sem := make(chan struct{}, 16)
	var wg sync.WaitGroup
	for i, m := range members {
		wg.Add(1)
		go func() { // bounded by ctx; waited for below
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			results[i] = a.memberKeyring(ctx, m, op, key)
		}()
	}
	wg.Wait()
	name := op
	if name == "" {
		name = "list"
	}
	resp := &KeyringResponse{Op: name, NumNodes: len(members), Keys: map[string]int{}, PrimaryKeys: map[string]int{}, Nodes: results}
	for _, n := range results {
		if n.Error != "" {
			continue
		}
		resp.NumOK++
		for _, k := range n.Keys {
			resp.Keys[k]++
		}
		resp.PrimaryKeys[n.Primary]++
	}
	sort.Slice(resp.Nodes, func(i, j int) bool { return resp.Nodes[i].Node < resp.Nodes[j].Node })
	return resp
}

func (a *Agent) memberKeyring(ctx context.Context, m gossip.Member, op string, key []byte) NodeKeyring {
	if m.Name == a.cfg.NodeName {
		nk, err := a.localKeyring(op, key)
		if err != nil {
			return NodeKeyring{Node: m.Name, Error: err.Error()}
		}
		return nk
	}
	c, err := NewClient(a.apiURL(m))
	if err != nil {
		return NodeKeyring{Node: m.Name, Error: err.Error()}
	}
	c.http = a.httpClient
	var nk NodeKeyring
	if op == "" {
		err = c.Do(ctx, http.MethodGet, "/v1/agent/keyring", nil, &nk)
	} else {
		err = c.Do(ctx, http.MethodPut, "/v1/agent/keyring/"+op, KeyRequest{Key: base64.StdEncoding.EncodeToString(key)}, &nk)
	}
	if err != nil {
		return NodeKeyring{Node: m.Name, Error: err.Error()}
	}
	nk.Node = m.Name
	return nk
}

// Keyring runs a cluster-wide keyring operation ("" or "list" lists). It
// returns the report, and an error naming the failed nodes if any failed.
func (c *Client) Keyring(ctx context.Context, op, key string) (*KeyringResponse, error) {
	var resp KeyringResponse
	var err error
	var code int
	switch op {
	case "", "list":
		code, err = c.do(ctx, http.MethodGet, "/v1/keyring", nil, &resp, true)
	case KeyringInstall, KeyringUse, KeyringRemove:
		code, err = c.do(ctx, http.MethodPut, "/v1/keyring/"+op, KeyRequest{Key: key}, &resp, true)
	default:
		return nil, fmt.Errorf("unknown keyring operation %q: want list, install, use or remove", op)
	}
	if err != nil {
		return nil, err
	}
	if code >= 300 && resp.NumNodes == 0 {
		return nil, fmt.Errorf("agent refused (%d): %s", code, resp.Error)
	}
	if resp.NumOK < resp.NumNodes {
		return &resp, fmt.Errorf("keyring %s failed on %d of %d nodes:\n%s", resp.Op, resp.NumNodes-resp.NumOK, resp.NumNodes, resp.Failed())
	}
	return &resp, nil
}

// gossipEncrypted reports whether this node's gossip is encrypted.
func (a *Agent) gossipEncrypted() bool {
	_, err := a.gossip.Keys()
	return err == nil
}
