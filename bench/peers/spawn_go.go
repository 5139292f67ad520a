// Spawn-and-wait peer of bench/spawn_bench.cpp: N children of PROGRAM, at most P at once, with
// os/exec's Command(...).Run() in P goroutines.
//
//	go run spawn_go.go -n N -parallel P [-program /bin/true]
package main

import (
	"flag"
	"fmt"
	"os/exec"
	"sync"
	"time"
)

func main() {
	n := flag.Int("n", 2000, "children")
	parallel := flag.Int("parallel", 1, "at most this many at once")
	program := flag.String("program", "/bin/true", "program")
	flag.Parse()
	t0 := time.Now()
	var wg sync.WaitGroup
	for w := 0; w < *parallel; w++ {
		count := *n / *parallel
		if w < *n%*parallel {
			count++
		}
		wg.Add(1)
		go func(count int) {
			defer wg.Done()
			for i := 0; i < count; i++ {
				if err := exec.Command(*program).Run(); err != nil {
					panic(err)
				}
			}
		}(count)
	}
	wg.Wait()
	s := time.Since(t0).Seconds()
	fmt.Printf("case=spawn impl=go parallel=%d n=%d seconds=%.3f per_s=%.1f\n", *parallel, *n, s, float64(*n)/s)
}
