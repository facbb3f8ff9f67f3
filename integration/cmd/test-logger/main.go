// Command test-logger is a containerd logging binary for the tests: it
// appends the container's stdout (fd 3) and stderr (fd 4) to the file named
// by its "out" argument, after signalling ready by closing fd 5, and tags
// the file with the CONTAINER_ID it was given.
package main

import (
	"fmt"
	"io"
	"os"
	"sync"
)

func main() {
	var out string
	for i := 1; i+1 < len(os.Args); i++ {
		if os.Args[i] == "out" {
			out = os.Args[i+1]
		}
	}
	f, err := os.OpenFile(out, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Fprintf(f, "LOGGER for %s/%s\n", os.Getenv("CONTAINER_NAMESPACE"), os.Getenv("CONTAINER_ID"))
	os.NewFile(5, "ready").Close()
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, fd := range []uintptr{3, 4} {
		wg.Add(1)
		go func(in *os.File) {
			defer wg.Done()
			buf := make([]byte, 4096)
			for {
				n, err := in.Read(buf)
				if n > 0 {
					mu.Lock()
					f.Write(buf[:n])
					mu.Unlock()
				}
				if err == io.EOF || err != nil {
					return
				}
			}
		}(os.NewFile(fd, "stdio"))
	}
	wg.Wait()
}
