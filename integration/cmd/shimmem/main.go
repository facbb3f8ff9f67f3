// Command shimmem reports where a running process's resident memory goes:
// anonymous memory against the pages of its own executable, and which
// sections and Go packages of that executable are resident, read from
// /proc/PID/pagemap and the executable's symbol table. make bench runs it
// on each shim while it serves a running container.
//
//	shimmem [-top N] PID
package main

import (
	"debug/elf"
	"encoding/binary"
	"flag"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
)

func main() {
	top := flag.Int("top", 12, "packages to list")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: shimmem [-top N] PID")
		os.Exit(2)
	}
	pid, err := strconv.Atoi(flag.Arg(0))
	if err != nil {
		fmt.Fprintf(os.Stderr, "shimmem: bad pid %q\n", flag.Arg(0))
		os.Exit(2)
	}
	if err := report(pid, *top); err != nil {
		fmt.Fprintf(os.Stderr, "shimmem: %v\n", err)
		os.Exit(1)
	}
}

const pageSize = 4096

func report(pid, top int) error {
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	if err != nil {
		return fmt.Errorf("read executable of %d: %w", pid, err)
	}
	f, err := elf.Open(fmt.Sprintf("/proc/%d/exe", pid))
	if err != nil {
		return fmt.Errorf("open %s: %w", exe, err)
	}
	defer f.Close()
	pages, err := residentPages(pid)
	if err != nil {
		return err
	}
	syms, _ := f.Symbols()
	sort.Slice(syms, func(i, j int) bool { return syms[i].Value < syms[j].Value })

	bySection := map[string]int{}
	byPackage := map[string]float64{}
	for _, s := range f.Sections {
		if s.Flags&elf.SHF_ALLOC == 0 || s.Size == 0 {
			continue
		}
		for a := s.Addr &^ (pageSize - 1); a < s.Addr+s.Size; a += pageSize {
			if !pages[a] {
				continue
			}
			bySection[s.Name]++
			// Share the page among the symbols in it, by bytes.
			lo, hi := max(a, s.Addr), min(a+pageSize, s.Addr+s.Size)
			for _, sym := range symbolsIn(syms, lo, hi) {
				byPackage[packageOf(sym.Name, s.Name)] += float64(sym.overlap) / pageSize
			}
		}
	}
	fmt.Printf("resident pages of %s, by section (KiB):\n", exe)
	names := make([]string, 0, len(bySection))
	for n := range bySection {
		names = append(names, n)
	}
	sort.Slice(names, func(i, j int) bool { return bySection[names[i]] > bySection[names[j]] })
	small := 0
	for _, n := range names {
		if kib := bySection[n] * pageSize / 1024; kib >= 16 {
			fmt.Printf("  %-14s %6d\n", n, kib)
		} else {
			small += kib
		}
	}
	if small > 0 {
		fmt.Printf("  %-14s %6d\n", "(the others)", small)
	}
	fmt.Printf("by package (KiB, top %d):\n", top)
	pkgs := make([]string, 0, len(byPackage))
	for p := range byPackage {
		pkgs = append(pkgs, p)
	}
	sort.Slice(pkgs, func(i, j int) bool { return byPackage[pkgs[i]] > byPackage[pkgs[j]] })
	for i, p := range pkgs {
		if i == top {
			break
		}
		fmt.Printf("  %6.0f  %s\n", byPackage[p]*pageSize/1024, p)
	}
	return nil
}

type overlap struct {
	Name    string
	overlap uint64
}

// symbolsIn returns the symbols overlapping [lo, hi) with the bytes each
// covers; bytes no symbol covers are counted as "(no symbol)".
func symbolsIn(syms []elf.Symbol, lo, hi uint64) []overlap {
	i := sort.Search(len(syms), func(i int) bool { return syms[i].Value+syms[i].Size > lo })
	var out []overlap
	covered := uint64(0)
	for ; i < len(syms) && syms[i].Value < hi; i++ {
		s := syms[i]
		if s.Size == 0 {
			continue
		}
		b, e := max(s.Value, lo), min(s.Value+s.Size, hi)
		if e > b {
			out = append(out, overlap{s.Name, e - b})
			covered += e - b
		}
	}
	if covered < hi-lo {
		out = append(out, overlap{"", hi - lo - covered})
	}
	return out
}

// packageOf names the Go package a symbol belongs to, or the section for
// symbols of no package (type descriptors, strings, the pcln table).
func packageOf(sym, section string) string {
	if sym == "" || strings.HasPrefix(sym, "go:") || strings.HasPrefix(sym, "type:") || strings.HasPrefix(sym, "runtime.pclntab") {
		return section
	}
	slash := strings.LastIndexByte(sym, '/')
	if dot := strings.IndexByte(sym[slash+1:], '.'); dot >= 0 {
		return sym[:slash+1+dot]
	}
	return sym
}

// residentPages returns the resident pages of the process's mappings of
// its own executable, read from pagemap (bit 63: present).
func residentPages(pid int) (map[uint64]bool, error) {
	maps, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", pid))
	if err != nil {
		return nil, fmt.Errorf("read maps: %w", err)
	}
	exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	pm, err := os.Open(fmt.Sprintf("/proc/%d/pagemap", pid))
	if err != nil {
		return nil, fmt.Errorf("open pagemap: %w", err)
	}
	defer pm.Close()
	pages := map[uint64]bool{}
	buf := make([]byte, 8)
	for _, line := range strings.Split(string(maps), "\n") {
		fields := strings.Fields(line)
		// The executable's own mappings, and the anonymous one right
		// after them that holds .bss and .noptrbss.
		if len(fields) < 5 || (len(fields) >= 6 && fields[5] != exe) || (len(fields) == 5 && len(pages) == 0) {
			continue
		}
		var start, end uint64
		if _, err := fmt.Sscanf(fields[0], "%x-%x", &start, &end); err != nil {
			continue
		}
		for a := start; a < end; a += pageSize {
			if _, err := pm.ReadAt(buf, int64(a/pageSize*8)); err != nil {
				return nil, fmt.Errorf("read pagemap: %w", err)
			}
			if binary.LittleEndian.Uint64(buf)&(1<<63) != 0 {
				pages[a] = true
			}
		}
		if len(fields) == 5 {
			break
		}
	}
	return pages, nil
}
