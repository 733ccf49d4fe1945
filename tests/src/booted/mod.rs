//! Booted-system tests: a Debian-based image OS with this build of hostd,
//! installed into a sysroot on a tmpfs and booted under systemd with
//! `systemd-nspawn`, so hostd runs as on a real image-based host: D-Bus
//! activated by systemd, authorized by polkitd, rebooting through logind,
//! with `ostree-finalize-staged` applying updates at shutdown.
//!
//! - [`rootfs`]: the debootstrapped root file system (cached).
//! - [`image`]: the test OS images v1, v2, v3, v11 and v12 built from it (cached per build).
//! - [`oci`]: tags of OCI directories and cheap private copies of them.
//! - [`cache`]: where those build products live and how they are replaced.
//! - [`bls`]: which deployment a bootloader boots, from the BLS entries.
//! - [`guest`]: one boot under `systemd-nspawn`, and commands run inside.
//! - [`machine`]: the machine tests use: install, boot, reboot, run, journal.

pub mod bls;
pub mod cache;
pub mod guest;
pub mod image;
pub mod machine;
pub mod oci;
pub mod rootfs;

pub use machine::BootedMachine;
