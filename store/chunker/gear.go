package chunker

// gearSeed fixes the gear table. Changing it changes every chunk boundary,
// and so every chunk id of new backups (old ones stay readable, but would no
// longer dedup against new data).
const gearSeed = 0x5374726174614344 // "StrataCD"

// gear holds 256 pseudo-random 64-bit values, filled once by newGear and
// never written afterwards.
var gear = newGear(gearSeed)

// newGear fills the table with splitmix64 (Steele et al.), a tiny, well
// mixed generator that needs no dependency and is easy to reimplement.
func newGear(seed uint64) [256]uint64 {
	var t [256]uint64
	x := seed
	for i := range t {
		x += 0x9e3779b97f4a7c15
		z := x
		z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
		z = (z ^ (z >> 27)) * 0x94d049bb133111eb
		t[i] = z ^ (z >> 31)
	}
	return t
}
