package keys

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"time"
)

// StateFile is the name of the rotation state file in each domain folder,
// <dir>/<domain>/.state.json. It starts with a dot and does not end in .pem,
// so the key table does not take it for a key. Only `authmilter rotate` and
// keygen write it; the key table reads it for the keys' creation times and
// the retired keys (see DomainState.Apply, Table.Retired).
const StateFile = ".state.json"

// stateVersion is the format version written to StateFile.
const stateVersion = 1

// KeyState is what rotation has observed about one key of a domain. Times
// are when `authmilter rotate` (or keygen) saw or did something, never
// guesses: a missing time means "not seen yet", which only ever delays a
// retirement.
type KeyState struct {
	// Algorithm is the key's a=.
	Algorithm Algorithm `json:"algorithm,omitempty"`
	// Created is when keygen or rotate made the key.
	Created time.Time `json:"created,omitzero"`
	// FirstSeen is when a tool first saw a key it did not make (imported,
	// or made by hand); it orders such keys when Created is unknown.
	FirstSeen time.Time `json:"first_seen,omitzero"`
	// Records are the TXT values this installation published at the
	// key's name (oldest first): a record there that is not one of them
	// (nor the key's own) belongs to someone else and is never replaced
	// without -force.
	Records []string `json:"records,omitempty"`
	// Testing is set for keys made with keygen -t y: their record carries
	// t=y (RFC 6376 §3.6.1).
	Testing bool `json:"testing,omitempty"`
	// Published is when its record was last published by an RFC 2136 update.
	Published time.Time `json:"published,omitzero"`
	// FirstActive is when rotate first saw the key active (chosen for signing).
	FirstActive time.Time `json:"first_active,omitzero"`
	// Superseded is when rotate first saw a newer key of the same algorithm
	// active while this one was not: the daemon stops signing with a key at
	// most keys.recheck after that. It is cleared if the key becomes active
	// again. The grace period counts from here.
	Superseded time.Time `json:"superseded,omitzero"`
	// Retired is when the key file was moved to retired/.
	Retired time.Time `json:"retired,omitzero"`
	// Withdrawn is when its DNS record was removed or revoked by an RFC 2136
	// update (zero: not yet, or left to the administrator).
	Withdrawn time.Time `json:"withdrawn,omitzero"`
}

// DomainState is the content of a domain's StateFile: the keys by selector.
type DomainState struct {
	// Version is the file format version (1).
	Version int `json:"version"`
	// Keys maps a selector to what is known about its key.
	Keys map[string]*KeyState `json:"keys"`
}

// Key returns the state of selector, creating an empty one if needed.
func (s *DomainState) Key(selector string) *KeyState {
	if s.Keys == nil {
		s.Keys = map[string]*KeyState{}
	}
	ks := s.Keys[selector]
	if ks == nil {
		ks = &KeyState{}
		s.Keys[selector] = ks
	}
	return ks
}

// Apply sets what the state knows of k: its creation time (as recorded by
// keygen or rotate, else when a tool first saw it; keys the state does not
// know keep their file's modification time) and its testing flag.
func (s *DomainState) Apply(k *Key) {
	ks := s.Keys[k.Selector]
	if ks == nil {
		return
	}
	switch {
	case !ks.Created.IsZero():
		k.Created = ks.Created
	case !ks.FirstSeen.IsZero():
		k.Created = ks.FirstSeen
	}
	k.Testing = ks.Testing
}

// NewKey records a key just made at selector: everything known about an
// earlier key with that selector (alternating selectors reuse names) is
// reset, except the records this installation published there, which
// stay ours to replace.
func (s *DomainState) NewKey(selector string, a Algorithm, created time.Time) *KeyState {
	ks := s.Key(selector)
	*ks = KeyState{Algorithm: a, Created: created, Records: ks.Records}
	return ks
}

// Selectors returns the selectors in the state, sorted.
func (s *DomainState) Selectors() []string {
	out := make([]string, 0, len(s.Keys))
	for sel := range s.Keys {
		out = append(out, sel)
	}
	sort.Strings(out)
	return out
}

// LoadState reads the StateFile of a domain folder; a missing file is an
// empty state.
func LoadState(domainDir string) (*DomainState, error) {
	path := filepath.Join(domainDir, StateFile)
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return &DomainState{Version: stateVersion, Keys: map[string]*KeyState{}}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("keys: %s: %w", path, err)
	}
	var s DomainState
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, fmt.Errorf("keys: %s: %w (move the file away to start over; rotation then only waits longer)", path, err)
	}
	if s.Version != stateVersion {
		return nil, fmt.Errorf("keys: %s: unknown version %d (want %d)", path, s.Version, stateVersion)
	}
	if s.Keys == nil {
		s.Keys = map[string]*KeyState{}
	}
	return &s, nil
}

// Save writes the state atomically to domainDir's StateFile (mode 0600).
func (s *DomainState) Save(domainDir string) error {
	s.Version = stateVersion
	data, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return fmt.Errorf("keys: %s: %w", domainDir, err)
	}
	if err := writeReplace(filepath.Join(domainDir, StateFile), append(data, '\n'), 0o600); err != nil {
		return fmt.Errorf("keys: %s: %w", domainDir, err)
	}
	return nil
}
