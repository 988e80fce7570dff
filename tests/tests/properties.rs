//! On stable, the properties the fuzz targets (fuzz/) check on nightly:
//! the lock content parser and the protocol's frame decoder take any bytes
//! without panicking, report only what they validated, and round-trip.

use std::io::Cursor;

use proptest::prelude::*;
use spoollock_lockfile::{AppendMark, LockContent, MAX_CONTENT};
use spoollock_protocol::codec::{decode, encode, PREFIX_LEN};
use spoollock_protocol::{read_frame, Frame, Hello, Reply, Request, Welcome, MAX_FRAME};

fn clean(token: &str) -> bool {
    !token.is_empty()
        && token.len() <= 128
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

/// Bytes that look like lock content often enough to reach every branch.
fn lockish() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..700),
        "[0-9 :\n]{0,12}(host|boot|start|append|x)=[ -~\n]{0,40}".prop_map(String::into_bytes),
        "[0-9]{1,6}\n(append=[0-9:x]{0,50}\n){1,2}".prop_map(String::into_bytes),
        (
            any::<u32>(),
            "[A-Za-z0-9._-]{0,130}",
            "[ -~]{0,20}",
            any::<u64>()
        )
            .prop_map(|(pid, host, boot, start)| format!(
                "{pid}\nhost={host}\nboot={boot}\nstart={start}\n"
            )
            .into_bytes()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    #[test]
    fn lock_content_parser_reports_only_valid_fields(data in lockish()) {
        let content = LockContent::parse(&data);
        if let Some(pid) = content.pid {
            prop_assert!(pid > 0 && pid <= i32::MAX as u32);
        }
        for token in [&content.host, &content.boot].into_iter().flatten() {
            prop_assert!(clean(token), "unclean token {:?}", token);
        }
        if data.len() > MAX_CONTENT {
            prop_assert_eq!(&LockContent::parse(&data[..MAX_CONTENT]), &content);
        }
        let rendered = content.render();
        prop_assert!(rendered.len() <= MAX_CONTENT);
        prop_assert_eq!(LockContent::parse(&rendered), content);
    }

    #[test]
    fn written_lock_content_parses_back(
        pid in 1u32..=i32::MAX as u32,
        host in proptest::option::of("[A-Za-z0-9._-]{1,128}"),
        boot in proptest::option::of("[a-f0-9-]{1,64}"),
        start in proptest::option::of(any::<u64>()),
        append in proptest::option::of(any::<(u64, u64, u64, u64)>()),
    ) {
        let append = append.map(|(dev, ino, offset, length)| AppendMark { dev, ino, offset, length });
        let content = LockContent { pid: Some(pid), host, boot, start, append };
        let rendered = content.render();
        let first_line = format!("{pid}\n");
        prop_assert!(rendered.starts_with(first_line.as_bytes()));
        prop_assert_eq!(LockContent::parse(&rendered), content);
    }

    #[test]
    fn frame_decoder_takes_any_payload(data in proptest::collection::vec(any::<u8>(), 0..600)) {
        round_trip::<Request>(&data)?;
        round_trip::<Reply>(&data)?;
        round_trip::<Hello>(&data)?;
        round_trip::<Welcome>(&data)?;
    }

    #[test]
    fn frame_decoder_takes_payloads_with_known_kinds(
        kind in 0u32..8,
        rest in proptest::collection::vec(any::<u8>(), 0..300),
    ) {
        let mut data = kind.to_le_bytes().to_vec();
        data.extend_from_slice(&rest);
        round_trip::<Request>(&data)?;
        round_trip::<Reply>(&data)?;
    }

    #[test]
    fn frame_reader_never_reads_past_its_input(
        frames in proptest::collection::vec(
            (0u32..(MAX_FRAME as u32 + 64), proptest::collection::vec(any::<u8>(), 0..64)),
            0..6,
        ),
    ) {
        let mut data = Vec::new();
        for (len, body) in &frames {
            data.extend_from_slice(&len.to_be_bytes());
            data.extend_from_slice(body);
        }
        let mut stream = Cursor::new(&data[..]);
        for _ in 0..16 {
            let before = stream.position();
            match read_frame::<_, Request>(&mut stream) {
                Ok(_) => prop_assert!(stream.position() > before),
                Err(_) => break,
            }
        }
        prop_assert!(stream.position() as usize <= data.len());
    }
}

fn round_trip<T: Frame + PartialEq + std::fmt::Debug>(payload: &[u8]) -> Result<(), TestCaseError> {
    if let Ok(msg) = decode::<T>(payload) {
        prop_assert!(payload.len() <= MAX_FRAME);
        let frame = encode(&msg).expect("a decoded message encodes");
        prop_assert!(frame.len() <= PREFIX_LEN + MAX_FRAME);
        let again: T = decode(&frame[PREFIX_LEN..]).expect("re-decodes");
        prop_assert_eq!(again, msg);
    }
    Ok(())
}

#[test]
fn every_message_kind_round_trips() {
    // Valid messages, encoded by the codec itself, decode to themselves.
    let hello = Hello::current();
    let frame = encode(&hello).unwrap();
    assert_eq!(decode::<Hello>(&frame[PREFIX_LEN..]).unwrap(), hello);
    let mut stream = Cursor::new(frame);
    assert_eq!(read_frame::<_, Hello>(&mut stream).unwrap(), hello);
}
