//! CHUNKING and BINARYMIME (RFC 3030) against the real binary, on raw
//! sockets (Python's smtplib has no BDAT): messages in chunks arrive byte
//! for byte, a chunk's octets are never commands, and every refusal keeps
//! the session in step; hostile counts neither hang nor crash the server.

use crate::util::*;

/// `BDAT n [LAST]` and the chunk's octets.
fn bdat(data: &[u8], last: bool) -> Vec<u8> {
    let mut v = format!("BDAT {}{}\r\n", data.len(), if last { " LAST" } else { "" }).into_bytes();
    v.extend_from_slice(data);
    v
}

/// A connected client after the greeting and EHLO.
fn ehlo(srv: &Server) -> Client {
    let mut c = srv.connect();
    c.expect_reply(220);
    let r = c.expect("EHLO client.example", 250);
    assert!(r.lines.iter().any(|l| l == "250-CHUNKING"), "{}", r.text());
    assert!(
        r.lines.iter().any(|l| l == "250-BINARYMIME"),
        "{}",
        r.text()
    );
    c
}

/// The message as the mailbox holds it, from the first line the client
/// sent (after the `Return-Path:` and `Received:` postie adds).
fn stored(fx: &Fixture, first_line: &[u8]) -> Vec<Vec<u8>> {
    raw_messages(&fx.mailbox(USER))
        .into_iter()
        .map(|m| {
            let at = m
                .windows(first_line.len())
                .position(|w| w == first_line)
                .unwrap_or_else(|| panic!("no {first_line:?} in {m:?}"));
            m[at..].to_vec()
        })
        .collect()
}

/// A BINARYMIME message in three chunks: a CRLF cut between two chunks is
/// one line end, a bare CR and a bare LF and binary octets pass unchanged,
/// a `From ` line is quoted as in any message, and the last line, without
/// a line end, gets one in the mailbox.
#[test]
fn message_in_three_chunks_arrives_byte_exact() {
    let fx = Fixture::new();
    let srv = Server::start(&fx, &[]);
    let mut c = ehlo(&srv);
    c.expect("MAIL FROM:<a@b.example> BODY=BINARYMIME", 250);
    c.expect(&format!("RCPT TO:<{USER}>"), 250);
    let parts: [&[u8]; 3] = [
        b"Subject: chunks\r\n\r\nbare\rcr and bare\nlf, split\r",
        b"\nFrom here\r\n\x00\xff\x80\x1b.\r\n",
        b"..dots\r\ntail",
    ];
    c.send_raw(&bdat(parts[0], false));
    let r = c.expect_reply(250);
    assert!(r.text().starts_with("250 2.0.0"), "{}", r.text());
    c.send_raw(&bdat(parts[1], false));
    c.expect_reply(250);
    c.send_raw(&bdat(parts[2], true));
    c.expect_reply(250);
    c.expect("QUIT", 221);
    let want: &[u8] = b"Subject: chunks\n\nbare\rcr and bare\nlf, split\n>From here\n\
                        \x00\xff\x80\x1b.\n..dots\ntail\n";
    assert_eq!(stored(&fx, b"Subject: chunks"), [want.to_vec()]);
    let total: usize = parts.iter().map(|p| p.len()).sum();
    assert!(
        srv.log_has(&format!("size={total} ")),
        "size as sent: {}",
        srv.log()
    );
}

/// The DATA terminator and a command inside a chunk are message data: one
/// message, holding those octets, and the session answers what follows.
#[test]
fn dot_and_commands_inside_a_chunk_stay_data() {
    let fx = Fixture::new();
    let srv = Server::start(&fx, &[]);
    let mut c = ehlo(&srv);
    c.expect("MAIL FROM:<a@b.example>", 250);
    c.expect(&format!("RCPT TO:<{USER}>"), 250);
    c.send_raw(&bdat(
        b"Subject: smuggle\r\n\r\nfirst\r\n.\r\nMAIL FROM:<x>\r\nRCPT TO:<alice>\r\nDATA\r\n",
        true,
    ));
    c.expect_reply(250);
    c.expect("NOOP", 250);
    c.expect("QUIT", 221);
    assert_eq!(
        stored(&fx, b"Subject: smuggle"),
        [b"Subject: smuggle\n\nfirst\n.\nMAIL FROM:<x>\nRCPT TO:<alice>\nDATA\n".to_vec()]
    );
    assert!(fx.read_mailbox("alice").is_empty());
}

/// Past --max-size (the chunks counted together) a chunk gets 552 5.3.4,
/// its octets (here lines that look like commands) are read and dropped,
/// the chunks pipelined after it too, and the command sent right after
/// the last one is answered in step. Nothing of that message is kept; the
/// next one is.
#[test]
fn chunk_over_the_size_limit_is_552_and_the_session_stays_in_step() {
    let fx = Fixture::new();
    let srv = Server::start(&fx, &["--max-size", "1000"]);
    let mut c = ehlo(&srv);
    c.expect("MAIL FROM:<a@b.example>", 250);
    c.expect(&format!("RCPT TO:<{USER}>"), 250);
    let noops = b"NOOP\r\n".repeat(100);
    let mut burst = bdat(&noops[..600], false);
    burst.extend(bdat(&noops[..600], false));
    burst.extend(bdat(b"RSET\r\nQUIT\r\n", true));
    burst.extend(b"HELP\r\n");
    c.send_raw(&burst);
    c.expect_reply(250);
    let r = c.expect_reply(552);
    assert!(r.text().starts_with("552 5.3.4"), "{}", r.text());
    c.expect_reply(552);
    c.expect_reply(214);
    // The transaction ended with BDAT LAST: a new one starts at once.
    c.expect("MAIL FROM:<a@b.example>", 250);
    c.expect(&format!("RCPT TO:<{USER}>"), 250);
    c.send_raw(&bdat(b"Subject: fits\r\n\r\nsmall\r\n", true));
    c.expect_reply(250);
    c.expect("QUIT", 221);
    assert_eq!(
        stored(&fx, b"Subject:"),
        [b"Subject: fits\n\nsmall\n".to_vec()]
    );
    assert!(srv.log_has("\"BDAT 600\": 552 5.3.4"), "{}", srv.log());
}

/// RFC 3030 2: DATA after BDAT in one transaction is 503 5.5.1 (and the
/// transaction goes on); RFC 3030 3: BINARYMIME with DATA is 503 too.
#[test]
fn data_after_bdat_is_503() {
    let fx = Fixture::new();
    let srv = Server::start(&fx, &[]);
    let mut c = ehlo(&srv);
    c.expect("MAIL FROM:<a@b.example>", 250);
    c.expect(&format!("RCPT TO:<{USER}>"), 250);
    c.send_raw(&bdat(b"Subject: mixed\r\n", false));
    c.expect_reply(250);
    let r = c.expect("DATA", 503);
    assert!(r.text().starts_with("503 5.5.1"), "{}", r.text());
    c.send_raw(&bdat(b"\r\nbody\r\n", true));
    c.expect_reply(250);
    c.expect("MAIL FROM:<a@b.example> BODY=BINARYMIME", 250);
    c.expect(&format!("RCPT TO:<{USER}>"), 250);
    c.expect("DATA", 503);
    c.expect("QUIT", 221);
    assert_eq!(
        stored(&fx, b"Subject: mixed"),
        [b"Subject: mixed\n\nbody\n".to_vec()]
    );
}

/// BDAT out of sequence (no MAIL, no recipient) is refused once its
/// octets are read: they are not commands.
#[test]
fn bdat_without_mail_is_503_in_step() {
    let fx = Fixture::new();
    let srv = Server::start(&fx, &[]);
    let mut c = ehlo(&srv);
    let mut burst = bdat(b"NOOP\r\nNOOP\r\n", false);
    burst.extend(b"HELP\r\n");
    c.send_raw(&burst);
    let r = c.expect_reply(503);
    assert!(r.text().starts_with("503 5.5.1"), "{}", r.text());
    c.expect_reply(214);
    c.expect("MAIL FROM:<a@b.example>", 250);
    c.send_raw(&bdat(b"QUIT\r\n", true));
    c.expect_reply(503);
    c.expect(&format!("RCPT TO:<{USER}>"), 250);
    c.send_raw(&bdat(b"Subject: after\r\n", true));
    c.expect_reply(250);
    c.expect("QUIT", 221);
    assert_eq!(stored(&fx, b"Subject:"), [b"Subject: after\n".to_vec()]);
}

/// RFC 2920 with RFC 3030: a whole transaction in one write, chunks and
/// all, then another; one reply per command, in order.
#[test]
fn pipelined_bdats() {
    let fx = Fixture::new();
    let srv = Server::start(&fx, &[]);
    let mut c = ehlo(&srv);
    let mut burst = Vec::new();
    for n in 1..=2 {
        burst.extend(format!("MAIL FROM:<a@b.example>\r\nRCPT TO:<{USER}>\r\n").as_bytes());
        burst.extend(bdat(format!("Subject: p{n}\r\n\r\n").as_bytes(), false));
        burst.extend(bdat(b"abc", false));
        burst.extend(bdat(b"", false));
        burst.extend(bdat(b"def\r\n", true));
    }
    burst.extend(b"QUIT\r\n");
    c.send_raw(&burst);
    for _ in 1..=2 {
        for code in [250, 250, 250, 250, 250, 250] {
            c.expect_reply(code);
        }
    }
    c.expect_reply(221);
    assert_eq!(
        stored(&fx, b"Subject:"),
        [
            b"Subject: p1\n\nabcdef\n".to_vec(),
            b"Subject: p2\n\nabcdef\n".to_vec()
        ]
    );
}

/// A count that does not parse (negative, past 2^64, missing) leaves the
/// end of the chunk unknown: 501 5.5.4 and the connection closes. A bad
/// end marker after a good count: the octets are read, 501, in step.
#[test]
fn malformed_counts_close_the_session() {
    let fx = Fixture::new();
    let srv = Server::start(&fx, &[]);
    for line in [
        "BDAT -1 LAST",
        "BDAT 99999999999999999999999",
        "BDAT",
        "BDAT LAST",
    ] {
        let mut c = ehlo(&srv);
        c.expect("MAIL FROM:<a@b.example>", 250);
        c.expect(&format!("RCPT TO:<{USER}>"), 250);
        c.send_raw(format!("{line}\r\n").as_bytes());
        let r = c.expect_reply(501);
        assert!(r.text().starts_with("501 5.5.4"), "{line}: {}", r.text());
        assert!(c.closed(), "{line}: still open");
    }
    let mut c = ehlo(&srv);
    c.send_raw(b"BDAT 6 SCRAMBLE\r\nNOOP\r\nHELP\r\n");
    c.expect_reply(501);
    c.expect_reply(214);
    c.expect("QUIT", 221);
    assert!(fx.read_mailbox(USER).is_empty());
}

/// A client that announces a chunk of a thousand million octets and
/// sends a few: whether the chunk is kept (a limit that allows it) or
/// dropped (over the limit), the server holds no more than it got, times
/// out, delivers nothing, and goes on serving others.
#[test]
fn huge_count_with_little_data_times_out() {
    for max in ["10000", "4000000000"] {
        let fx = Fixture::new();
        let srv = Server::start(&fx, &["--timeout-data", "1", "--max-size", max]);
        let mut c = ehlo(&srv);
        c.expect("MAIL FROM:<a@b.example>", 250);
        c.expect(&format!("RCPT TO:<{USER}>"), 250);
        c.send_raw(b"BDAT 1000000000 LAST\r\nSubject: short\r\n\r\nonly this");
        let r = c.expect_reply(421);
        assert!(r.text().starts_with("421 4.4.2"), "{max}: {}", r.text());
        assert!(c.closed());
        assert!(fx.read_mailbox(USER).is_empty(), "{max}");
        // Another client, its message in the same write as its BDAT: the
        // 1 s data timeout cannot fall between them, however busy the
        // machine (DATA's message would follow the 354 in a write of its
        // own).
        let mut other = ehlo(&srv);
        other.expect("MAIL FROM:<a@b.example>", 250);
        other.expect(&format!("RCPT TO:<{USER}>"), 250);
        let body = b"Subject: other\r\n\r\nfine\r\n";
        other.send_raw(&[format!("BDAT {} LAST\r\n", body.len()).as_bytes(), body].concat());
        other.expect_reply(250);
        other.expect("QUIT", 221);
        assert_eq!(stored(&fx, b"Subject:").len(), 1, "{max}");
    }
}

/// A client that closes inside a chunk: nothing is delivered, the server
/// lives on.
#[test]
fn eof_inside_a_chunk_delivers_nothing() {
    let fx = Fixture::new();
    let srv = Server::start(&fx, &[]);
    let mut c = ehlo(&srv);
    c.expect("MAIL FROM:<a@b.example>", 250);
    c.expect(&format!("RCPT TO:<{USER}>"), 250);
    c.send_raw(b"BDAT 100 LAST\r\nSubject: cut\r\n");
    c.w.shutdown(std::net::Shutdown::Write).unwrap();
    let _ = c.try_reply();
    let mut other = ehlo(&srv);
    other.send_message("a@b.example", USER, b"Subject: other\r\n\r\nfine\r\n");
    assert_eq!(
        stored(&fx, b"Subject:"),
        [b"Subject: other\n\nfine\n".to_vec()]
    );
}

/// A message in chunks past --spill-threshold goes to a temporary file on
/// the way and arrives whole, CRLFs cut between chunks included.
#[test]
fn large_message_in_chunks_spills_and_arrives_intact() {
    let fx = Fixture::new();
    let srv = Server::start(&fx, &["--spill-threshold", "4096"]);
    let mut c = ehlo(&srv);
    c.expect("MAIL FROM:<a@b.example>", 250);
    c.expect(&format!("RCPT TO:<{USER}>"), 250);
    let mut wire = b"Subject: large\r\n\r\n".to_vec();
    for i in 0..3000 {
        wire.extend(format!("line {i:05} of the large message\r\n").as_bytes());
    }
    // Chunks of 997 octets: their ends fall anywhere, between CR and LF
    // too.
    let pieces: Vec<&[u8]> = wire.chunks(997).collect();
    let mut burst = Vec::new();
    for (i, p) in pieces.iter().enumerate() {
        burst.extend(bdat(p, i + 1 == pieces.len()));
    }
    c.send_raw(&burst);
    for _ in &pieces {
        c.expect_reply(250);
    }
    c.expect("QUIT", 221);
    let want: Vec<u8> = String::from_utf8(wire)
        .unwrap()
        .replace("\r\n", "\n")
        .into();
    assert_eq!(stored(&fx, b"Subject: large"), [want]);
}

/// The temporary directory full while the chunks spill: the message is
/// not kept, its LAST chunk gets 452 4.3.1, and the session goes on.
#[test]
fn chunks_into_a_full_temp_dir_are_452_and_in_step() {
    let test = "chunks_into_a_full_temp_dir_are_452_and_in_step";
    let fx = Fixture::new();
    let Some(_tmp) = Tmpfs::mount(&fx.dir.path().join("tmp"), "64k", "1777", test) else {
        return;
    };
    let srv = Server::start(&fx, &["--spill-threshold", "4096"]);
    let mut c = ehlo(&srv);
    c.expect("MAIL FROM:<a@b.example>", 250);
    c.expect(&format!("RCPT TO:<{USER}>"), 250);
    let chunk = b"0123456789abcdef\r\n".repeat(8000);
    let mut burst = bdat(&chunk, false);
    burst.extend(bdat(&chunk, false));
    burst.extend(bdat(b"end\r\n", true));
    burst.extend(b"NOOP\r\n");
    c.send_raw(&burst);
    c.expect_reply(250);
    c.expect_reply(250);
    let r = c.expect_reply(452);
    assert!(r.text().starts_with("452 4.3.1"), "{}", r.text());
    c.expect_reply(250);
    c.send_message("a@b.example", USER, b"Subject: small\r\n\r\nfits\r\n");
    c.expect("QUIT", 221);
    assert_eq!(
        stored(&fx, b"Subject:"),
        [b"Subject: small\n\nfits\n".to_vec()]
    );
    assert!(srv.log_has("cannot hold the message"), "{}", srv.log());
}
