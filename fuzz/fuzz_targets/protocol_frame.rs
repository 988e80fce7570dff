//! The helper reads frames from an unprivileged, possibly hostile client
//! (and the client reads the helper's): decoding arbitrary bytes must
//! never panic or allocate beyond the frame limit, and whatever decodes
//! must encode back to a frame that decodes to the same message.
#![no_main]

use std::io::Cursor;

use libfuzzer_sys::fuzz_target;
use spoollock_protocol::codec::{decode, encode, PREFIX_LEN};
use spoollock_protocol::{read_frame, Frame, Hello, Reply, Request, Welcome, MAX_FRAME};

fn round_trip<T: Frame + PartialEq + std::fmt::Debug>(payload: &[u8]) {
    if let Ok(msg) = decode::<T>(payload) {
        assert!(payload.len() <= MAX_FRAME);
        let frame = encode(&msg).expect("a decoded message encodes");
        assert!(frame.len() <= PREFIX_LEN + MAX_FRAME);
        let again: T = decode(&frame[PREFIX_LEN..]).expect("re-decodes");
        assert_eq!(again, msg);
    }
}

fuzz_target!(|data: &[u8]| {
    // One payload, as each message type.
    round_trip::<Request>(data);
    round_trip::<Reply>(data);
    round_trip::<Hello>(data);
    round_trip::<Welcome>(data);
    // A stream of frames, as the helper reads its pipe: read until the
    // first error, never past the input.
    let mut stream = Cursor::new(data);
    for _ in 0..64 {
        let before = stream.position();
        match read_frame::<_, Request>(&mut stream) {
            Ok(_) => assert!(stream.position() > before),
            Err(_) => break,
        }
    }
    assert!(stream.position() as usize <= data.len());
});
