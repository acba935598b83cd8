package monitor

import "hash/fnv"

// Rendezvous weights must be identical on every node and across releases
// (followers recompute failover targets from the leader's plan), so they
// use fixed, seedless hashes: FNV-1a for strings and the splitmix64
// finaliser to mix two hashes into a well-spread weight.

func hashString(s string) uint64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(s))
	return mix64(h.Sum64())
}

func mix64(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

// weight is the rendezvous (highest-random-weight) score of an item for a
// slot: each item goes to the slot that scores highest, so adding or
// removing a slot only moves the items that score highest for that slot.
func weight(item, slot uint64) uint64 {
	return mix64(item ^ mix64(slot))
}

// aggSalt separates "how good an aggregator is this node" from its group
// assignment so that the two choices are independent.
const aggSalt = 0x5bd1e9955bd1e995

// aggregatorScore ranks nodes for the aggregator role. It depends on the ID
// only, so a follower can recompute the same order for failover.
func aggregatorScore(id string) uint64 {
	return mix64(hashString(id) ^ aggSalt)
}
