// Package provider is Colony's machine layer: the leader's autoscaler
// launches and terminates machines running a Colony agent through a
// Provider, and a broker (ChooseType) matches what pending work needs to
// the providers' instance types.
//
// Three providers ship:
//
//   - Local runs `colony agent` processes on this host, each on its own
//     loopback IP with its own data dir (development, demos, tests);
//   - Docker runs containers of the Colony image with per-type CPU and
//     memory limits and labels (a heterogeneous pool on one engine);
//   - Exec runs an operator script (types/launch/terminate/list, JSON on
//     stdin and stdout, schema in EXEC.md) so any cloud CLI plugs in.
//
// Retry decorates any of them with per-attempt timeouts and exponential
// backoff with jitter for ErrTransient failures; New builds one by kind
// from a typed config or a map decoded from YAML.
//
// # Exactly once
//
// Every launch carries an idempotency key, and every instance is tagged
// with its launch's key and its slot index (0..Count-1). Launch lists
// first and creates only the missing slots, and the machine layer refuses
// a second copy of a slot where it can (deterministic container and
// directory names; EC2's ClientToken), so Launch(key) may be repeated any
// number of times, concurrently or after a crash, and still yields Count
// instances. Terminate is idempotent. The caller's side of the protocol
// (DESIGN.md in this directory):
//
//  1. commit an intent {key, pool, type, count} through Raft;
//  2. call Launch(key) (through Retry);
//  3. reconcile: List, take the instances carrying the key, and commit
//     "intent done" with their IDs;
//  4. a new leader, for every open intent, Lists and reconciles before
//     calling Launch(key) again: the repeat fills only missing slots.
//
// Terminations work the same way (intent with the IDs → Terminate → List
// shows them terminated or gone → done).
//
// Providers keep their state on the machines' side (state files, container
// labels, cloud tags), never in memory, so a Provider built by a new leader
// sees everything the old one launched.
package provider
