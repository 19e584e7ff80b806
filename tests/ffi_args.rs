//! The C boundary refuses bad input with a code and a message, never a
//! crash: NULL pointers, invalid UTF-8, bad JSON, unknown options, bad
//! references, and the caller-buffer convention.

mod common;

use common::capi::{self, last_error};
use serde_json::json;
use std::ffi::CStr;
use vicpull::ffi::pull::{vic_pull_cancel, vic_pull_free, vic_pull_poll, vic_pull_start};
use vicpull::ffi::result::{vic_result, vic_result_name};
use vicpull::ffi::text::vic_last_error_message;
use vicpull::ffi::version::vic_version;

fn start_err(options: serde_json::Value) -> (vic_result, String) {
    match capi::start(&options) {
        Ok(_) => panic!("start accepted {options}"),
        Err(e) => e,
    }
}

#[test]
fn null_pointers_are_invalid_argument() {
    let mut out = std::ptr::null_mut();
    // SAFETY: NULL options is part of what is being tested.
    let rc = unsafe { vic_pull_start(std::ptr::null(), std::ptr::null(), &mut out) };
    assert_eq!(rc, vic_result::InvalidArgument);
    assert!(
        last_error().contains("options_json is NULL"),
        "{}",
        last_error()
    );
    assert!(out.is_null(), "out must be untouched on error");

    let opts = c"{\"reference\":\"a\",\"store\":\"/tmp/x\"}";
    // SAFETY: NULL out pointer is what is being tested.
    let rc = unsafe { vic_pull_start(opts.as_ptr(), std::ptr::null(), std::ptr::null_mut()) };
    assert_eq!(rc, vic_result::InvalidArgument);
    assert!(last_error().contains("out is NULL"));

    // SAFETY: NULL handles are documented no-ops or INVALID_ARGUMENT.
    unsafe {
        vic_pull_cancel(std::ptr::null_mut());
        vic_pull_free(std::ptr::null_mut());
        let rc = vic_pull_poll(std::ptr::null_mut(), 0, std::ptr::null_mut());
        assert_eq!(rc, vic_result::InvalidArgument);
    }
}

#[test]
fn invalid_utf8_and_json() {
    let bad = b"{\"reference\":\"\xff\xfe\"}\0";
    let mut out = std::ptr::null_mut();
    // SAFETY: a NUL-terminated byte string.
    let rc = unsafe { vic_pull_start(bad.as_ptr().cast(), std::ptr::null(), &mut out) };
    assert_eq!(rc, vic_result::InvalidArgument);
    assert!(last_error().contains("not valid UTF-8"), "{}", last_error());

    let not_json = c"{reference: busybox";
    // SAFETY: a NUL-terminated string.
    let rc = unsafe { vic_pull_start(not_json.as_ptr(), std::ptr::null(), &mut out) };
    assert_eq!(rc, vic_result::InvalidArgument);
    assert!(
        last_error().starts_with("INVALID_ARGUMENT: options:"),
        "{}",
        last_error()
    );
}

#[test]
fn unknown_keys_wrong_types_and_ranges() {
    let (rc, msg) = start_err(json!({"reference": "a", "store": "/tmp/s", "refrence": "b"}));
    assert_eq!(rc, vic_result::InvalidArgument);
    assert!(msg.contains("unknown field `refrence`"), "{msg}");
    let (rc, msg) = start_err(json!({"reference": "a", "store": "/tmp/s", "max_attempts": "3"}));
    assert_eq!(rc, vic_result::InvalidArgument);
    assert!(msg.contains("invalid type"), "{msg}");
    let (rc, msg) = start_err(json!({"reference": "a", "store": "/tmp/s",
                                     "max_concurrent_downloads": 0}));
    assert_eq!(rc, vic_result::InvalidArgument);
    assert!(msg.contains("max_concurrent_downloads"), "{msg}");
    let (rc, msg) = start_err(json!({"store": "/tmp/s"}));
    assert_eq!(rc, vic_result::InvalidArgument);
    assert!(msg.contains("missing field `reference`"), "{msg}");
    let (rc, msg) = start_err(json!({"reference": "a", "store": "/tmp/s", "platform": "linux"}));
    assert_eq!(rc, vic_result::InvalidArgument);
    assert!(msg.contains("os/arch"), "{msg}");
}

#[test]
fn bad_references_name_the_part() {
    for (r, part) in [
        ("UPPER/case", "lowercase"),
        ("repo:bad tag", "whitespace"),
        ("repo@sha256:1234", "digest"),
        ("host:0/x", "port"),
    ] {
        let (rc, msg) = start_err(json!({"reference": r, "store": "/tmp/s"}));
        assert_eq!(rc, vic_result::BadReference, "{r}");
        assert!(msg.contains(part), "{r}: {msg}");
    }
}

#[test]
fn caller_buffer_convention() {
    let _ = start_err(json!({"reference": "a", "store": "/tmp/s", "zzz": 1}));
    let mut n = 0usize;
    // SAFETY: NULL buffer asks for the length.
    let rc = unsafe { vic_last_error_message(std::ptr::null_mut(), 0, &mut n) };
    assert_eq!(rc, vic_result::BufferTooSmall);
    assert!(n > 10);
    let mut small = [0x55u8; 4];
    // SAFETY: 4 writable bytes.
    let rc = unsafe { vic_last_error_message(small.as_mut_ptr().cast(), 4, &mut n) };
    assert_eq!(rc, vic_result::BufferTooSmall);
    assert_eq!(small[0], 0, "a too-small buffer gets an empty string");
    let mut exact = vec![0u8; n + 1];
    // SAFETY: n + 1 writable bytes.
    let rc = unsafe { vic_last_error_message(exact.as_mut_ptr().cast(), n + 1, &mut n) };
    assert_eq!(rc, vic_result::Ok);
    assert_eq!(exact[n], 0);
    // SAFETY: a NULL out_n is refused, not written.
    let rc =
        unsafe { vic_last_error_message(exact.as_mut_ptr().cast(), n + 1, std::ptr::null_mut()) };
    assert_eq!(rc, vic_result::InvalidArgument);
}

#[test]
fn names_and_version() {
    // SAFETY: static strings.
    let name = |v| {
        unsafe { CStr::from_ptr(vic_result_name(v)) }
            .to_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(name(8), "DIGEST_MISMATCH");
    assert_eq!(name(11), "CANCELLED");
    assert_eq!(name(999), "UNKNOWN");
    // SAFETY: static string.
    let v = unsafe { CStr::from_ptr(vic_version()) }.to_str().unwrap();
    assert_eq!(v, env!("CARGO_PKG_VERSION"));
}
