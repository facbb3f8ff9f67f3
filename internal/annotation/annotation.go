// Package annotation names the keys of urunc's image configuration, so
// that every error names the key a user sets.
package annotation

// Prefix is the prefix urunc's images use for their unikernel
// configuration keys (com.urunc.unikernel.hypervisor, ...), in the OCI
// annotations or in /urunc.json.
const Prefix = "com.urunc.unikernel."
