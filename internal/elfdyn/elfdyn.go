// Package elfdyn reads what the dynamic loader reads of an ELF binary: its
// interpreter, the libraries it needs and where it says to look for them.
//
// debug/elf's DynString reads the whole dynamic string table on every call
// (hundreds of KiB for a library such as glib), and a qemu container's
// Create walks some fifty libraries, three lookups each: about 4 MB of
// garbage and 8 ms per walk (BenchmarkELFDeps in rootfs). This reads the
// dynamic segment once and only the strings it names.
package elfdyn

import (
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

// Info is what the loader needs of a binary.
type Info struct {
	// Interp is the program interpreter (PT_INTERP), empty for a static
	// binary.
	Interp string
	// Needed are the DT_NEEDED sonames, in order.
	Needed []string
	// SearchPath are the directories of DT_RUNPATH and DT_RPATH, in that
	// order, with $ORIGIN left as written.
	SearchPath []string
}

// maxString bounds one string of the dynamic string table: a soname or a
// search path is far shorter; a longer one means a corrupt file.
const maxString = 4096

// Read returns the loader's view of the ELF file at path. A static binary
// has an empty Info; a file that is not ELF is an error.
func Read(path string) (Info, error) {
	f, err := os.Open(path)
	if err != nil {
		return Info{}, err
	}
	defer f.Close()
	info, err := decode(f)
	if err != nil {
		return Info{}, fmt.Errorf("read ELF %s: %w", path, err)
	}
	return info, nil
}

func decode(r io.ReaderAt) (Info, error) {
	ef, err := elf.NewFile(r)
	if err != nil {
		return Info{}, err
	}
	var info Info
	var dynamic *elf.Prog
	for _, p := range ef.Progs {
		switch p.Type {
		case elf.PT_INTERP:
			s, err := readString(p, 0, p.Filesz)
			if err != nil {
				return Info{}, fmt.Errorf("interpreter: %w", err)
			}
			info.Interp = s
		case elf.PT_DYNAMIC:
			dynamic = p
		}
	}
	if dynamic == nil {
		return info, nil
	}
	entries, err := readDynamic(ef, dynamic)
	if err != nil {
		return Info{}, fmt.Errorf("dynamic segment: %w", err)
	}
	var strtab, strsz uint64
	for _, e := range entries {
		switch e.tag {
		case elf.DT_STRTAB:
			strtab = e.val
		case elf.DT_STRSZ:
			strsz = e.val
		}
	}
	// The string table is looked up only when an entry names a string: a
	// static-pie binary has a dynamic segment and no libraries.
	var strs *elf.Prog
	var runpath, rpath []string
	for _, e := range entries {
		if e.tag != elf.DT_NEEDED && e.tag != elf.DT_RUNPATH && e.tag != elf.DT_RPATH {
			continue
		}
		if strs == nil {
			if strs, err = loadSegment(ef, strtab); err != nil {
				return Info{}, fmt.Errorf("string table: %w", err)
			}
		}
		if e.val >= strsz {
			return Info{}, fmt.Errorf("%v string at %d is past the string table's %d bytes", e.tag, e.val, strsz)
		}
		s, err := readString(strs, strtab-strs.Vaddr+e.val, strsz-e.val)
		if err != nil {
			return Info{}, fmt.Errorf("%v: %w", e.tag, err)
		}
		switch e.tag {
		case elf.DT_NEEDED:
			info.Needed = append(info.Needed, s)
		case elf.DT_RUNPATH:
			runpath = append(runpath, strings.Split(s, ":")...)
		case elf.DT_RPATH:
			rpath = append(rpath, strings.Split(s, ":")...)
		}
	}
	info.SearchPath = append(runpath, rpath...)
	return info, nil
}

type dynEntry struct {
	tag elf.DynTag
	val uint64
}

// readDynamic decodes the dynamic segment up to its DT_NULL.
func readDynamic(ef *elf.File, p *elf.Prog) ([]dynEntry, error) {
	size := uint64(16)
	if ef.Class == elf.ELFCLASS32 {
		size = 8
	}
	if p.Filesz > 1<<20 {
		return nil, fmt.Errorf("%d bytes is not a dynamic segment", p.Filesz)
	}
	buf := make([]byte, p.Filesz)
	if _, err := p.ReadAt(buf, 0); err != nil {
		return nil, err
	}
	var out []dynEntry
	for off := uint64(0); off+size <= uint64(len(buf)); off += size {
		var e dynEntry
		if size == 16 {
			e = dynEntry{elf.DynTag(ef.ByteOrder.Uint64(buf[off:])), ef.ByteOrder.Uint64(buf[off+8:])}
		} else {
			e = dynEntry{elf.DynTag(ef.ByteOrder.Uint32(buf[off:])), uint64(ef.ByteOrder.Uint32(buf[off+4:]))}
		}
		if e.tag == elf.DT_NULL {
			break
		}
		out = append(out, e)
	}
	return out, nil
}

// loadSegment is the PT_LOAD segment whose file contents hold vaddr: the
// dynamic section gives addresses, not file offsets.
func loadSegment(ef *elf.File, vaddr uint64) (*elf.Prog, error) {
	for _, p := range ef.Progs {
		if p.Type == elf.PT_LOAD && vaddr >= p.Vaddr && vaddr < p.Vaddr+p.Filesz {
			return p, nil
		}
	}
	return nil, fmt.Errorf("no loaded segment holds address %#x", vaddr)
}

// readString reads the NUL-terminated string at off in p, at most limit
// bytes long, growing its read from a size that fits any soname.
func readString(p *elf.Prog, off, limit uint64) (string, error) {
	for n := uint64(256); ; n *= 2 {
		n = min(n, limit, maxString)
		buf := make([]byte, n)
		got, err := p.ReadAt(buf, int64(off))
		if err != nil && !errors.Is(err, io.EOF) {
			return "", err
		}
		if end := bytes.IndexByte(buf[:got], 0); end >= 0 {
			return string(buf[:end]), nil
		}
		if uint64(got) < n {
			return "", errors.New("string runs past the end of its segment")
		}
		if n == limit || n == maxString {
			return "", fmt.Errorf("no end of string within %d bytes", n)
		}
	}
}
