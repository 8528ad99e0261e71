package main

import (
	"os"
	"path/filepath"
	"testing"
)

func TestResolveMemoryLimit(t *testing.T) {
	for _, tc := range []struct {
		name  string
		flag  string
		files map[string]string // under the fake cgroup root
		want  int64
		err   bool
	}{
		{"explicit", "100Mi", nil, 100 << 20, false},
		{"explicit beats the container's", "100Mi", map[string]string{"memory.max": "268435456\n"}, 100 << 20, false},
		{"none", "0", map[string]string{"memory.max": "268435456\n"}, 0, false},
		{"auto, cgroup v2", "auto", map[string]string{"memory.max": "268435456\n"}, 241591910, false},
		{"auto, cgroup v2 unlimited", "auto", map[string]string{"memory.max": "max\n"}, 0, false},
		{"auto, cgroup v1", "auto", map[string]string{"memory/memory.limit_in_bytes": "134217728\n"}, 120795955, false},
		{"auto, cgroup v1 unlimited", "auto", map[string]string{"memory/memory.limit_in_bytes": "9223372036854771712\n"}, 0, false},
		{"auto, no cgroup", "auto", nil, 0, false},
		{"auto, garbled", "auto", map[string]string{"memory.max": "lots\n"}, 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			for name, content := range tc.files {
				path := filepath.Join(root, name)
				if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			got, err := resolveMemoryLimit(tc.flag, root)
			if (err != nil) != tc.err {
				t.Fatalf("error %v, want error %t", err, tc.err)
			}
			if got.bytes != tc.want {
				t.Errorf("limit %d bytes, want %d", got.bytes, tc.want)
			}
		})
	}
}
