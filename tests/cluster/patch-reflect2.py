#!/usr/bin/env python3
"""Apply the Go >= 1.18 fix of github.com/modern-go/reflect2 v1.0.2 to a
vendored reflect2 v1.0.1 (as in Kubernetes v1.20's vendor/ tree).

Go 1.18 changed reflect.mapiterinit from
    func mapiterinit(t *rtype, m unsafe.Pointer) unsafe.Pointer
to
    func mapiterinit(t *rtype, m unsafe.Pointer, it *hiter)
so reflect2 v1.0.1's linkname'd 2-argument declaration makes the runtime
write into a garbage iterator (SIGSEGV in aeshashbody/mapiterinit under
json-iterator's sorted map encoder, e.g. on server-side apply of a custom
resource). The fix, as upstream did it in v1.0.2:
  * hiter gets the full field layout of the runtime's hiter;
  * mapiterinit and UnsafeMapType.UnsafeIterate move to go_above_118.go
    (3-argument form, iterator allocated by the caller) and
    go_below_118.go (old form), selected by build tags.

Usage: patch-reflect2.py VENDOR_DIR/github.com/modern-go/reflect2
Idempotent: does nothing if already applied.
"""
import pathlib
import re
import sys

d = pathlib.Path(sys.argv[1])
link = d / "unsafe_link.go"
umap = d / "unsafe_map.go"
above = d / "go_above_118.go"
below = d / "go_below_118.go"

if above.exists():
    print(f"reflect2 patch already applied in {d}")
    sys.exit(0)

link_src = link.read_text()
map_src = umap.read_text()

old_decl = re.compile(
    r"// m escapes into the return value, but the caller of mapiterinit\n"
    r"// doesn't let the return value escape.\n"
    r"//go:noescape\n"
    r"//go:linkname mapiterinit reflect.mapiterinit\n"
    r"func mapiterinit\(rtype unsafe.Pointer, m unsafe.Pointer\) \*hiter\n\n"
)
link_src, n = old_decl.subn("", link_src)
if n != 1:
    sys.exit("unexpected unsafe_link.go: mapiterinit declaration not found")

old_hiter = re.compile(r"type hiter struct \{\n.*?\n\}\n", re.S)
new_hiter = """type hiter struct {
	key         unsafe.Pointer
	value       unsafe.Pointer
	t           unsafe.Pointer
	h           unsafe.Pointer
	buckets     unsafe.Pointer
	bptr        unsafe.Pointer
	overflow    *[]unsafe.Pointer
	oldoverflow *[]unsafe.Pointer
	startBucket uintptr
	offset      uint8
	wrapped     bool
	B           uint8
	i           uint8
	bucket      uintptr
	checkBucket uintptr
}
"""
link_src, n = old_hiter.subn(new_hiter, link_src)
if n != 1:
    sys.exit("unexpected unsafe_link.go: hiter struct not found")

old_iter = (
    "func (type2 *UnsafeMapType) UnsafeIterate(obj unsafe.Pointer) MapIterator {\n"
    "\treturn &UnsafeMapIterator{\n"
    "\t\thiter:      mapiterinit(type2.rtype, *(*unsafe.Pointer)(obj)),\n"
    "\t\tpKeyRType:  type2.pKeyRType,\n"
    "\t\tpElemRType: type2.pElemRType,\n"
    "\t}\n"
    "}\n\n"
)
if old_iter not in map_src:
    sys.exit("unexpected unsafe_map.go: UnsafeIterate not found")
map_src = map_src.replace(old_iter, "")

above_src = """//go:build go1.18
// +build go1.18

package reflect2

import (
	"unsafe"
)

// m escapes into the return value, but the caller of mapiterinit
// doesn't let the return value escape.
//go:noescape
//go:linkname mapiterinit reflect.mapiterinit
func mapiterinit(rtype unsafe.Pointer, m unsafe.Pointer, it *hiter)

func (type2 *UnsafeMapType) UnsafeIterate(obj unsafe.Pointer) MapIterator {
	var it hiter
	mapiterinit(type2.rtype, *(*unsafe.Pointer)(obj), &it)
	return &UnsafeMapIterator{
		hiter:      &it,
		pKeyRType:  type2.pKeyRType,
		pElemRType: type2.pElemRType,
	}
}
"""
below_src = """//go:build !go1.18
// +build !go1.18

package reflect2

import (
	"unsafe"
)

// m escapes into the return value, but the caller of mapiterinit
// doesn't let the return value escape.
//go:noescape
//go:linkname mapiterinit reflect.mapiterinit
func mapiterinit(rtype unsafe.Pointer, m unsafe.Pointer) (val *hiter)

func (type2 *UnsafeMapType) UnsafeIterate(obj unsafe.Pointer) MapIterator {
	return &UnsafeMapIterator{
		hiter:      mapiterinit(type2.rtype, *(*unsafe.Pointer)(obj)),
		pKeyRType:  type2.pKeyRType,
		pElemRType: type2.pElemRType,
	}
}
"""
link.write_text(link_src)
umap.write_text(map_src)
below.write_text(below_src)
above.write_text(above_src)  # written last: marks the patch as applied
print(f"reflect2 patched (v1.0.2 mapiterinit fix) in {d}")
