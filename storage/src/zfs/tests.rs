use super::store::usage_has_flag;
use super::*;
use crate::error::Error;

#[test]
fn receive_usage_flags() {
    let fuse =
        "usage:\n\treceive [-vnF] <filesystem|volume|snapshot>\n\treceive [-vnF] -d <filesystem>\n";
    assert!(!usage_has_flag(fuse, 's'));
    assert!(usage_has_flag(fuse, 'F'));
    let openzfs = "usage:\n\treceive [-vMnsFhu] [-o <property>=<value>] ... <filesystem>\n\treceive -A <filesystem|volume>\n";
    assert!(usage_has_flag(openzfs, 's'));
    assert!(usage_has_flag(openzfs, 'u'));
}

#[test]
fn missing_binary_is_a_clear_error() {
    let mut config = ZfsConfig::new("nopool", "/nonexistent");
    config.zfs_bin = "/nonexistent/bin/zfs".into();
    let err = ZfsStore::open(config).expect_err("no binary");
    assert!(matches!(err, Error::BinaryNotFound { .. }), "{err}");
    assert!(err.to_string().contains("/nonexistent/bin/zfs"), "{err}");
}
