package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
)

// outputFlag adds the -o flag of the commands that print a listing.
func outputFlag(fs *flag.FlagSet) *string {
	return fs.String("o", "table", "output: table or json")
}

// parseFlags parses a subcommand's flags and checks its -o; when the
// command must end here it says with which exit code (0 after -h).
func parseFlags(fs *flag.FlagSet, args []string, output *string) (code int, stop bool) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0, true
		}
		return 2, true
	}
	if output != nil && *output != "table" && *output != "json" {
		fmt.Fprintf(fs.Output(), "urunc %s: -o %q: want table or json\n", fs.Name(), *output)
		return 2, true
	}
	return 0, false
}

// writeJSON writes v indented, for -o json.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
