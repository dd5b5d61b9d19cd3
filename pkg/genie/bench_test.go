package genie

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// BenchmarkConfDir is what every ADD pays to find its network in the conf
// dir: read the dir and resolve one configured default network among
// genie's own conflist and several delegate confs.
func BenchmarkConfDir(b *testing.B) {
	for _, files := range []int{4, 16} {
		b.Run(fmt.Sprintf("files=%d", files), func(b *testing.B) {
			dir := b.TempDir()
			write := func(name, body string) {
				if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
					b.Fatal(err)
				}
			}
			write("00-genie.conflist", `{"cniVersion":"1.1.0","name":"genie","plugins":[{"type":"genie","defaultNetworks":["br-a"]}]}`)
			for i := 1; i < files; i++ {
				write(fmt.Sprintf("%02d-net.conf", i), fmt.Sprintf(`{"cniVersion":"1.1.0","name":"br-%c","type":"bridge",`+
					`"bridge":"br%d","isGateway":true,"ipam":{"type":"host-local","dataDir":"/var/lib/cni/networks","ranges":[[{"subnet":"10.%d.0.0/24"}]]}}`, 'a'+i-1, i, i))
			}
			log := discardLogger()
			for b.Loop() {
				cd, err := loadConfDir(dir, log)
				if err != nil {
					b.Fatal(err)
				}
				if d, err := cd.defaults([]string{"br-a"}); err != nil || d[0].Name != "br-a" {
					b.Fatal(d, err)
				}
			}
		})
	}
}
