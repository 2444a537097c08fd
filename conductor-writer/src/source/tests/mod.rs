//! Tests against real images made with qemu-img.
