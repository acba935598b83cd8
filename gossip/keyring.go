package gossip

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"unicode"
)

// ErrNoEncryption means a keyring operation was asked of a node that runs
// without gossip encryption.
var ErrNoEncryption = errors.New("gossip encryption is not enabled on this node (start it with --encrypt)")

// ValidateClusterLabel checks a --cluster-label value: at most 255 bytes of
// printable ASCII without spaces (memberlist writes it on every packet).
func ValidateClusterLabel(l string) error {
	if len(l) > 255 {
		return fmt.Errorf("cluster label is %d bytes: at most 255", len(l))
	}
	for _, r := range l {
		if r > unicode.MaxASCII || !unicode.IsPrint(r) || r == ' ' {
			return fmt.Errorf("cluster label %q: only printable ASCII without spaces", l)
		}
	}
	return nil
}

// Keyring is this node's gossip keyring: every key, primary first.
type Keyring struct {
	Primary string   // base64
	Keys    []string // base64, primary first
}

// Keys returns the node's keyring, or ErrNoEncryption.
func (g *Gossip) Keys() (Keyring, error) {
	kr := g.keyring
	if kr == nil {
		return Keyring{}, ErrNoEncryption
	}
	// GetKeys lists the primary first.
	var out Keyring
	for _, k := range kr.GetKeys() {
		out.Keys = append(out.Keys, base64.StdEncoding.EncodeToString(k))
	}
	out.Primary = base64.StdEncoding.EncodeToString(kr.GetPrimaryKey())
	return out, nil
}

// InstallKey adds a key used to decrypt (installing a present key is a no-op).
func (g *Gossip) InstallKey(key []byte) error {
	kr := g.keyring
	if kr == nil {
		return ErrNoEncryption
	}
	if err := kr.AddKey(key); err != nil {
		return fmt.Errorf("install key: %w", err)
	}
	return nil
}

// UseKey makes an installed key the primary one, used to encrypt.
func (g *Gossip) UseKey(key []byte) error {
	kr := g.keyring
	if kr == nil {
		return ErrNoEncryption
	}
	if !hasKey(kr.GetKeys(), key) {
		return errors.New("use key: the key is not installed on this node: install it first (colony keyring install)")
	}
	if err := kr.UseKey(key); err != nil {
		return fmt.Errorf("use key: %w", err)
	}
	return nil
}

// ErrPrimaryKey refuses removing the key in use.
var ErrPrimaryKey = errors.New("the key is this node's primary key: make another key primary first (colony keyring use NEWKEY), then remove this one")

// RemoveKey removes a key that is not the primary one. Removing a key not
// installed is a no-op.
func (g *Gossip) RemoveKey(key []byte) error {
	kr := g.keyring
	if kr == nil {
		return ErrNoEncryption
	}
	if bytes.Equal(kr.GetPrimaryKey(), key) {
		return fmt.Errorf("remove key: %w", ErrPrimaryKey)
	}
	if err := kr.RemoveKey(key); err != nil {
		return fmt.Errorf("remove key: %w", err)
	}
	return nil
}

func hasKey(keys [][]byte, key []byte) bool {
	for _, k := range keys {
		if bytes.Equal(k, key) {
			return true
		}
	}
	return false
}
