//! Checks a kernel-driver PE image.
