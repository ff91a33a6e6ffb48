//! `--serve-baseline`, the process `--baseline` starts by default: it prints its loopback address
//! on its first stdout line and answers any POST with 200, until it is killed.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::process::{Command, Stdio};

#[test]
fn the_baseline_process_prints_its_address_and_answers_200() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_switchboard-loadtest"))
        .arg("--serve-baseline")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn the load generator");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("first line");
    let addr = line
        .trim()
        .strip_prefix("baseline listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_string();
    assert!(addr.starts_with("127.0.0.1:"), "{addr}");

    let body = r#"{"object":"whatsapp_business_account"}"#;
    let mut conn = TcpStream::connect(&addr).expect("connect");
    write!(
        conn,
        "POST /webhooks/whatsapp HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("send");
    let mut answer = String::new();
    conn.read_to_string(&mut answer).expect("answer");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    child.kill().expect("kill");
    child.wait().expect("reap");
}
