package runloop

import (
	"slices"
	"sync"
	"testing"
)

func TestQueueTakeOrder(t *testing.T) {
	tests := []struct {
		name   string
		pushes []int
		want   []int
	}{
		{"empty", nil, nil},
		{"one", []int{7}, []int{7}},
		{"several keep their order", []int{3, 1, 2, 1}, []int{3, 1, 2, 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var q Queue[int] // the zero value is ready
			for _, v := range tt.pushes {
				q.Push(v)
			}
			if got := q.Len(); got != len(tt.pushes) {
				t.Errorf("Len = %d, want %d", got, len(tt.pushes))
			}
			if got := q.Take(); !slices.Equal(got, tt.want) {
				t.Errorf("Take = %v, want %v", got, tt.want)
			}
			if got := q.Take(); got != nil {
				t.Errorf("second Take = %v, want nil", got)
			}
		})
	}
}

func TestQueueWait(t *testing.T) {
	var q Queue[string]
	select {
	case <-q.Wait():
		t.Fatal("Wait readable before any Push")
	default:
	}
	q.Push("a")
	q.Push("b") // one pending wake-up covers both
	select {
	case <-q.Wait():
	default:
		t.Fatal("Wait not readable after Push")
	}
	select {
	case <-q.Wait():
		t.Fatal("two wake-ups for one batch")
	default:
	}
	if got := q.Take(); !slices.Equal(got, []string{"a", "b"}) {
		t.Fatalf("Take = %v", got)
	}
}

// Many producers, one consumer: nothing is lost and each producer's items
// arrive in the order it pushed them.
func TestQueueConcurrentProducers(t *testing.T) {
	const producers, each = 8, 500
	type item struct{ from, seq int }
	var q Queue[item]
	var wg sync.WaitGroup
	for p := range producers {
		wg.Go(func() {
			for i := range each {
				q.Push(item{p, i})
			}
		})
	}
	next := make([]int, producers)
	for got := 0; got < producers*each; {
		<-q.Wait()
		for _, it := range q.Take() {
			if it.seq != next[it.from] {
				t.Fatalf("producer %d: got item %d, want %d", it.from, it.seq, next[it.from])
			}
			next[it.from]++
			got++
		}
	}
	wg.Wait()
	if n := q.Len(); n != 0 {
		t.Fatalf("%d items left", n)
	}
}
