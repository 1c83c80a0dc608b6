//! The NBD server's parsing of what a client sends never panics: any bytes as the client's side of
//! the handshake, then as requests. Whatever the server answers during the handshake is well
//! framed (greeting, then whole option replies), a parsed request encodes back to its bytes, a
//! write never carries more than MAX_PAYLOAD, and a read that passes check_read is inside the
//! export.
#![no_main]

use std::io::{Read, Write};

use blkcache::nbd::{check_read, negotiate, proto, ExportInfo, Outcome};
use libfuzzer_sys::fuzz_target;

/// The client's bytes in, the server's bytes out.
struct Duplex<'a> {
    input: &'a [u8],
    output: Vec<u8>,
}

impl Read for Duplex<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.input.read(buf)
    }
}

impl Write for Duplex<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.output.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The server's handshake bytes: the greeting, then option replies each of the length it says;
/// after the last one, at most an `NBD_OPT_EXPORT_NAME` reply (size, flags, maybe 124 zeroes).
fn check_framing(out: &[u8]) {
    assert_eq!(&out[..18], &proto::greeting());
    let mut rest = &out[18..];
    while rest.len() >= 20 && rest[..8] == proto::REPLY_MAGIC.to_be_bytes() {
        let len = u32::from_be_bytes(rest[16..20].try_into().unwrap()) as usize;
        assert!(rest.len() >= 20 + len, "option reply shorter than its length");
        rest = &rest[20 + len..];
    }
    assert!(
        rest.is_empty() || rest.len() == 10 || rest.len() == 134,
        "{} stray bytes after the option replies",
        rest.len()
    );
}

fuzz_target!(|data: &[u8]| {
    let export = ExportInfo {
        name: "blkcache".into(),
        description: "fuzz".into(),
        size: 1 << 20,
        block_size: 2048,
    };
    let mut d = Duplex {
        input: data,
        output: Vec::new(),
    };
    let outcome = negotiate(&mut d, &export);
    check_framing(&d.output);
    if let Ok(Outcome::Transmission { .. }) = outcome {
        let mut rest = d.input;
        while rest.len() >= proto::REQUEST_LEN {
            let header: [u8; proto::REQUEST_LEN] = rest[..proto::REQUEST_LEN].try_into().unwrap();
            rest = &rest[proto::REQUEST_LEN..];
            let Ok(req) = proto::parse_request(header) else {
                break;
            };
            assert_eq!(proto::encode_request(&req), header);
            assert!(req.payload_len() <= proto::MAX_PAYLOAD);
            if req.command == proto::CMD_READ && check_read(&req, export.size).is_ok() {
                assert!(req.offset + u64::from(req.len) <= export.size);
                assert!(req.len <= proto::MAX_PAYLOAD);
            }
            rest = &rest[(req.payload_len() as usize).min(rest.len())..];
        }
    }
});
