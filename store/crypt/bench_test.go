package crypt

import (
	"testing"
)

func benchSeal(b *testing.B, data []byte) {
	k := testKeys(b, 1)
	id := k.ID(data)
	dst := k.Seal(nil, data, id)
	b.SetBytes(int64(len(data)))
	b.ResetTimer()
	for b.Loop() {
		dst = k.Seal(dst[:0], data, id)
	}
	b.ReportMetric(float64(len(dst))/float64(len(data)), "ratio")
}

func benchOpen(b *testing.B, data []byte) {
	k := testKeys(b, 1)
	id := k.ID(data)
	sealed := k.Seal(nil, data, id)
	out, _ := k.Open(nil, sealed, id)
	b.SetBytes(int64(len(data)))
	b.ResetTimer()
	for b.Loop() {
		var err error
		if out, err = k.Open(out[:0], sealed, id); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSealRandom1MiB(b *testing.B) { benchSeal(b, randomData(1, 1<<20)) }
func BenchmarkSealText1MiB(b *testing.B)   { benchSeal(b, textData(1, 1<<20)) }
func BenchmarkOpenRandom1MiB(b *testing.B) { benchOpen(b, randomData(1, 1<<20)) }
func BenchmarkOpenText1MiB(b *testing.B)   { benchOpen(b, textData(1, 1<<20)) }

func BenchmarkID1MiB(b *testing.B) {
	k := testKeys(b, 1)
	data := randomData(1, 1<<20)
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		k.ID(data)
	}
}

func BenchmarkID4KiB(b *testing.B) {
	k := testKeys(b, 1)
	data := randomData(1, 4<<10)
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		k.ID(data)
	}
}
