package testimage

import "encoding/binary"

// MultibootKernel returns a tiny multiboot (a.out kludge) kernel for the
// guest types whose real kernels this project cannot build (unikraft,
// hermit, mewz): qemu boots it with -kernel, it prints
// "MBK_CMDLINE: " and the command line it was given on the serial port,
// writes MultibootExitValue to qemu's isa-debug-exit port (0x501: qemu
// exits with (v<<1)|1 where the device exists, as mewz's images have it),
// and otherwise triple-faults, which qemu -no-reboot ends with status 0.
// It is 32-bit machine code assembled here, so the tests need no
// assembler.
func MultibootKernel() []byte {
	const (
		base   = 0x100000 // where qemu loads it: the header's load_addr
		serial = 0x3f8
		stack  = 0x90000
	)
	var code []byte
	emit := func(b ...byte) { code = append(code, b...) }
	u32 := func(v uint32) []byte { return binary.LittleEndian.AppendUint32(nil, v) }
	// Header: magic, flags (bit 16: the address fields below are valid),
	// checksum, header_addr, load_addr, load_end_addr (0: the whole
	// file), bss_end_addr, entry_addr.
	var magic, flags uint32 = 0x1BADB002, 0x00010000
	for _, v := range []uint32{magic, flags, -(magic + flags), base, base, 0, 0, base + 32} {
		emit(u32(v)...)
	}
	var patches []func()
	at := func() uint32 { return uint32(len(code)) }
	// entry: EBX holds the multiboot info; its cmdline field is at +16.
	emit(0xBC)
	emit(u32(stack)...) // mov esp, stack
	var prefixRef, idtRef, print1, print2 uint32
	emit(0xBE)
	prefixRef = at()
	emit(0, 0, 0, 0) // mov esi, prefix
	emit(0xE8)
	print1 = at()
	emit(0, 0, 0, 0)       // call print
	emit(0x8B, 0x73, 0x10) // mov esi, [ebx+16]
	emit(0xE8)
	print2 = at()
	emit(0, 0, 0, 0)               // call print
	emit(0xB0, 0x0A)               // mov al, '\n'
	emit(0x66, 0xBA, 0xF8, 0x03)   // mov dx, 0x3f8
	emit(0xEE)                     // out dx, al
	emit(0xB0, MultibootExitValue) // mov al, value
	emit(0x66, 0xBA, 0x01, 0x05)   // mov dx, 0x501
	emit(0xEE)                     // out dx, al
	emit(0x0F, 0x01, 0x1D)         // lidt [idt]
	idtRef = at()
	emit(0, 0, 0, 0)
	emit(0xCC)                   // int3: no IDT, so a triple fault
	emit(0xFA, 0xF4, 0xEB, 0xFC) // cli; hlt; jmp back to cli
	printAt := at()
	emit(0x66, 0xBA, byte(serial&0xff), byte(serial>>8)) // mov dx, 0x3f8
	emit(0xAC)                                           // .l: lodsb
	emit(0x84, 0xC0)                                     // test al, al
	emit(0x74, 0x03)                                     // jz .d
	emit(0xEE)                                           // out dx, al
	emit(0xEB, 0xF8)                                     // jmp .l
	emit(0xC3)                                           // .d: ret
	prefixAt := at()
	emit([]byte("MBK_CMDLINE: \x00")...)
	idtAt := at()
	emit(0, 0, 0, 0, 0, 0) // limit 0, base 0
	patches = append(patches,
		func() { binary.LittleEndian.PutUint32(code[prefixRef:], base+prefixAt) },
		func() { binary.LittleEndian.PutUint32(code[idtRef:], base+idtAt) },
		func() { binary.LittleEndian.PutUint32(code[print1:], printAt-(print1+4)) },
		func() { binary.LittleEndian.PutUint32(code[print2:], printAt-(print2+4)) },
	)
	for _, p := range patches {
		p()
	}
	return code
}

// MultibootExitValue is what MultibootKernel writes to isa-debug-exit.
const MultibootExitValue = 42
