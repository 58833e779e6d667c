//! Files as the kernel numbers them: (device, inode), the device in the kernel's own
//! encoding, which is what the LSM programs read from `inode->i_sb->s_dev` and what
//! `secops_inodes` and `secops_grants` entries are keyed by.

use std::os::unix::fs::MetadataExt;

/// The kernel's encoding of a device number (`MKDEV`: major << 20 | minor), as
/// `inode->i_sb->s_dev` holds it, from a `st_dev`.
pub(crate) fn kernel_dev(st_dev: u64) -> u32 {
    let major = libc::major(st_dev);
    let minor = libc::minor(st_dev);
    (major << 20) | (minor & 0xf_ffff)
}

/// (dev, inode) of a file as the kernel numbers them, the dev in the kernel's encoding.
pub(crate) fn kernel_inode(meta: &std::fs::Metadata) -> (u32, u64) {
    (kernel_dev(meta.dev()), meta.ino())
}
