package lifecycle

import (
	"os"
	"testing"
)

func FuzzPersistedState(f *testing.F) {
	f.Add([]byte(`{"version":1,"id":"c","pid":1,"rootfsUndo":{"dirs":["/x"]}}`))
	f.Add([]byte(`{"version":2}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		dir := t.TempDir()
		if err := os.WriteFile(StatePath(dir), data, 0o600); err != nil {
			t.Fatal(err)
		}
		_, _ = ReadState(dir)
	})
}
