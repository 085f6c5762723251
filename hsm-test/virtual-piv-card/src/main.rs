//! A virtual PIV card for nasring's tests.
//!
//! Nitrokey's PIV applet (`piv-authenticator`) runs on a software Trussed platform and is
//! inserted into the virtual reader of vsmartcard's vpcd, so that every PC/SC client
//! (pcscd, OpenSC, yubico-piv-tool, nasring) sees it as a card in the reader
//! "Virtual PCD 00 00" (port 35963) or "Virtual PCD 00 01" (port 35964).
//!
//! FOR TESTS ONLY: the card's keys live in a plain file or in memory.

mod card;
mod platform;

use std::{
    io,
    net::{Ipv4Addr, SocketAddr, TcpStream},
    path::PathBuf,
    process::ExitCode,
};

use piv_authenticator::{Authenticator, Options as AppletOptions};
use trussed::virt::{StorageConfig, StoreConfig};
use trussed_core::types::Location;

use card::Card;

const USAGE: &str = "\
usage: virtual-piv-card [--port 35963|35964] [--state FILE] [--serial N]

Inserts a virtual PIV card into vpcd's reader on 127.0.0.1:PORT (default 35963).

  --port PORT    vpcd's port: 35963 is reader \"Virtual PCD 00 00\", 35964 \"Virtual PCD 00 01\"
  --state FILE   keep the card's contents in FILE (64 KiB, made if missing); without it the
                 card starts in factory state: PIN 123456, PUK 12345678, default 3DES
                 management key 010203040506070801020304050607080102030405060708
  --serial N     the serial number the card reports (default 10000000 + PORT)

RUST_LOG=debug logs each command's instruction and status word.";

/// The size of a storage image of the software platform.
const STATE_FILE_LEN: u64 = 64 * 1024;

struct Options {
    port: u16,
    state: Option<PathBuf>,
    serial: u32,
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let options = match parse_options(std::env::args().skip(1)) {
        Ok(Some(options)) => options,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("virtual-piv-card: {message}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(&options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("virtual-piv-card: {message}");
            ExitCode::FAILURE
        }
    }
}

fn parse_options(mut args: impl Iterator<Item = String>) -> Result<Option<Options>, String> {
    let mut port = 35963;
    let mut state = None;
    let mut serial = None;
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--port" => port = parse_port(&value()?)?,
            "--state" => state = Some(PathBuf::from(value()?)),
            "--serial" => {
                let text = value()?;
                serial = Some(text.parse().map_err(|_| format!("bad serial {text:?}"))?);
            }
            "-h" | "--help" => return Ok(None),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    let serial = serial.unwrap_or(10_000_000 + u32::from(port));
    Ok(Some(Options {
        port,
        state,
        serial,
    }))
}

fn parse_port(text: &str) -> Result<u16, String> {
    match text {
        "35963" => Ok(35963),
        "35964" => Ok(35964),
        _ => Err(format!(
            "the port must be 35963 or 35964 (vpcd's readers), not {text:?}"
        )),
    }
}

fn run(options: &Options) -> Result<(), String> {
    let mut storage = StoreConfig {
        internal: internal_storage(options.state.as_ref())?,
        external: StorageConfig::ram(),
        volatile: StorageConfig::ram(),
    };
    let (mut vpcd, mut socket) = connect_patiently(options.port)?;
    eprintln!(
        "virtual-piv-card: card with serial {} inserted into vpcd on 127.0.0.1:{}",
        options.serial, options.port
    );

    // Each pass is one power cycle of the card: a reset or power-off ends it, and the next
    // starts with nothing volatile kept (no verified PIN, no authenticated management key).
    loop {
        let outcome = storage.with_store(|store| {
            platform::run(store, |client| {
                let applet_options = AppletOptions::new().storage(Location::Internal);
                let applet = Authenticator::new(client, applet_options);
                serve(&mut vpcd, &socket, Card::new(applet, options.serial))
            })
        });
        storage.internal.format = false;
        storage.external.format = false;
        storage.volatile.format = true;
        if let Err(e) = outcome {
            // vpcd drops a card that connects while it still holds the previous one's
            // socket: insert the card again, keeping its contents.
            eprintln!("virtual-piv-card: the connection to vpcd ended ({e}); inserting again");
            std::thread::sleep(std::time::Duration::from_millis(100));
            (vpcd, socket) = connect_patiently(options.port)?;
        }
    }
}

/// Connects to vpcd, trying for a few seconds while it is not (yet) listening.
fn connect_patiently(port: u16) -> Result<(vpicc::Connection, TcpStream), String> {
    let mut tries = 0;
    loop {
        match connect(port) {
            Ok(pair) => return Ok(pair),
            Err(_) if tries < 50 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            Err(e) => return Err(e),
        }
    }
}

/// The storage that survives a reset: a file when the card's state must survive a restart.
fn internal_storage(path: Option<&PathBuf>) -> Result<StorageConfig<'static>, String> {
    let Some(path) = path else {
        return Ok(StorageConfig::ram());
    };
    match std::fs::metadata(path) {
        Ok(meta) if meta.len() != STATE_FILE_LEN => Err(format!(
            "{} is not a card state file (it must be {STATE_FILE_LEN} bytes); \
             remove it to start from factory state",
            path.display()
        )),
        Ok(_) => Ok(StorageConfig::filesystem(path.clone())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            Ok(StorageConfig::filesystem(path.clone()))
        }
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

/// Connects to vpcd on the loopback interface only (it listens on all of them).
fn connect(port: u16) -> Result<(vpicc::Connection, TcpStream), String> {
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let stream = TcpStream::connect(address).map_err(|e| {
        format!("cannot reach vpcd on {address}: {e}; is pcscd running with vsmartcard-vpcd?")
    })?;
    stream
        .set_nodelay(true)
        .map_err(|e| format!("cannot set TCP_NODELAY: {e}"))?;
    let socket = stream
        .try_clone()
        .map_err(|e| format!("cannot share the socket: {e}"))?;
    Ok((vpicc::Connection::from(stream), socket))
}

/// Serves commands until the card is reset (`Ok`) or the connection fails (`Err`).
fn serve(vpcd: &mut vpicc::Connection, socket: &TcpStream, mut card: Card<'_>) -> io::Result<()> {
    loop {
        // vpcd writes each message in two pieces; with delayed acknowledgement the second
        // one waits about 40 ms. Quick acknowledgement is not sticky, so ask before each read.
        socket2::SockRef::from(socket).set_tcp_quickack(true)?;
        vpcd.poll(&mut card)?;
        if card.was_reset() {
            return Ok(());
        }
    }
}
