package cgroup

import (
	"os"
	"testing"
)

// A block device the monitor only reads gets a read-only rule; any other
// one may be read and written.
func TestBlockDeviceRulesReadOnly(t *testing.T) {
	if _, err := os.Stat("/dev/loop0"); err != nil {
		t.Skip("no /dev/loop0")
	}
	rules, err := BlockDeviceRules([]string{"/dev/loop0"}, func(string) bool { return true })
	if err != nil {
		t.Fatal(err)
	}
	if len(rules) != 1 || rules[0].Access != "r" || rules[0].Type != "b" || !rules[0].Allow {
		t.Fatalf("read-only rules %+v", rules)
	}
	rules, err = BlockDeviceRules([]string{"/dev/loop0"}, func(string) bool { return false })
	if err != nil {
		t.Fatal(err)
	}
	if len(rules) != 1 || rules[0].Access != "rwm" {
		t.Fatalf("writable rules %+v", rules)
	}
}
