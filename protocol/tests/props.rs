//! Properties of the codec: every message round-trips, and no byte string
//! makes the reader panic, over-read or accept a malformed frame.

use proptest::prelude::*;
use spoollock_protocol::codec::{decode, encode, read_frame, CodecError, PREFIX_LEN};
use spoollock_protocol::{
    ConfigProblem, ConfigSyntax, Hello, HolderInfo, LockMode, LockRequest, LockStatus, Refusal,
    Reply, Request, SpoolSel, StaleKind, Target, WaitSpec, MAX_FRAME,
};

fn spool() -> impl Strategy<Value = SpoolSel> {
    prop_oneof![
        Just(SpoolSel::Default),
        any::<u32>().prop_map(SpoolSel::Index),
        ".{0,64}".prop_map(SpoolSel::Path),
    ]
}

fn target() -> impl Strategy<Value = Target> {
    (spool(), proptest::option::of(".{0,40}"))
        .prop_map(|(spool, mailbox)| Target { spool, mailbox })
}

fn wait() -> impl Strategy<Value = WaitSpec> {
    prop_oneof![
        Just(WaitSpec::NoWait),
        Just(WaitSpec::Forever),
        any::<u32>().prop_map(WaitSpec::Retries),
        any::<u64>().prop_map(WaitSpec::TimeoutMs),
    ]
}

fn request() -> impl Strategy<Value = Request> {
    let mode = prop_oneof![
        Just(LockMode::Session),
        proptest::option::of(any::<u32>()).prop_map(|holder_pid| LockMode::Detached { holder_pid }),
    ];
    prop_oneof![
        (target(), wait(), mode, proptest::option::of(any::<u32>())).prop_map(
            |(target, wait, mode, stale_age_secs)| Request::Lock(LockRequest {
                target,
                wait,
                mode,
                stale_age_secs
            })
        ),
        target().prop_map(Request::Touch),
        target().prop_map(Request::Unlock),
        target().prop_map(Request::Check),
        Just(Request::Bye),
        target().prop_map(Request::ForceUnlock),
        target().prop_map(Request::ForceTouch),
    ]
}

fn reply() -> impl Strategy<Value = Reply> {
    let holder = (
        proptest::option::of(any::<u32>()),
        proptest::option::of("[a-z.]{0,20}"),
        any::<i64>(),
    )
        .prop_map(|(pid, host, mtime_secs)| HolderInfo {
            pid,
            host,
            mtime_secs,
        });
    prop_oneof![
        Just(Reply::Touched),
        Just(Reply::Unlocked),
        Just(Reply::Bye),
        holder
            .clone()
            .prop_map(|h| Reply::Status(LockStatus::Stale(h, StaleKind::PidReused))),
        proptest::option::of(holder).prop_map(|holder| Reply::Error(Refusal::Busy { holder })),
        (any::<u32>(), 0..4u8).prop_map(|(line, which)| {
            let problem = [
                ConfigSyntax::NotUtf8,
                ConfigSyntax::BadSpoolPath,
                ConfigSyntax::ExpectedSpoolPath,
                ConfigSyntax::UnknownDirective,
            ][usize::from(which)];
            Reply::Error(Refusal::BadConfig(ConfigProblem::Syntax { line, problem }))
        }),
        (any::<u32>(), proptest::option::of("[a-z.]{1,32}")).prop_map(
            |(owner_uid, owner_login)| {
                Reply::Error(Refusal::ForeignLockFile {
                    owner_uid,
                    owner_login,
                })
            }
        ),
        "[a-z.]{1,32}".prop_map(|login| Reply::Error(Refusal::LockNameIsLogin { login })),
        Just(Reply::Error(Refusal::AuditUnavailable)),
    ]
}

proptest! {
    #[test]
    fn requests_round_trip(r in request()) {
        let bytes = encode(&r).unwrap();
        prop_assert!(bytes.len() <= PREFIX_LEN + MAX_FRAME);
        let back: Request = read_frame(&mut &bytes[..]).unwrap();
        prop_assert_eq!(back, r);
    }

    #[test]
    fn replies_round_trip(r in reply()) {
        let bytes = encode(&r).unwrap();
        let back: Reply = read_frame(&mut &bytes[..]).unwrap();
        prop_assert_eq!(back, r);
    }

    #[test]
    fn every_cut_of_a_frame_is_truncated(r in request(), cut in 1usize..4096) {
        let bytes = encode(&r).unwrap();
        let cut = cut % bytes.len();
        prop_assume!(cut > 0);
        let res = read_frame::<_, Request>(&mut &bytes[..cut]);
        prop_assert!(matches!(res, Err(CodecError::Truncated { .. })), "{:?}", res);
    }

    #[test]
    fn appended_bytes_are_trailing(r in request(), extra in proptest::collection::vec(any::<u8>(), 1..16)) {
        let bytes = encode(&r).unwrap();
        let mut payload = bytes[PREFIX_LEN..].to_vec();
        payload.extend_from_slice(&extra);
        let res = decode::<Request>(&payload);
        prop_assert!(
            matches!(res, Err(CodecError::TrailingBytes { .. }) | Err(CodecError::Oversize { .. })),
            "{:?}", res
        );
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        // Whatever comes back, it is a value or a typed error; and a
        // successfully decoded message re-encodes to the same frame.
        if let Ok(msg) = read_frame::<_, Request>(&mut &bytes[..]) {
            let again = encode(&msg).unwrap();
            prop_assert_eq!(&again[..], &bytes[..again.len()]);
        }
        let _ = read_frame::<_, Reply>(&mut &bytes[..]);
        let _ = read_frame::<_, Hello>(&mut &bytes[..]);
    }

    #[test]
    fn arbitrary_payloads_in_valid_frames_never_panic(payload in proptest::collection::vec(any::<u8>(), 1..128)) {
        let mut frame = (payload.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(&payload);
        match read_frame::<_, Request>(&mut &frame[..]) {
            Ok(msg) => prop_assert_eq!(encode(&msg).unwrap(), frame),
            Err(e) => prop_assert!(e.problem().is_some(), "{:?}", e),
        }
    }
}
