//! The IOS-XE exec CLI, rendered from the one device model so the CLI can
//! never disagree with gNOI/gNMI: `show version`, `show running-config`,
//! `show install summary`, `show boot`, `dir flash:`, `show clock`,
//! `show processes cpu`, `terminal length|width`, `enable`/`disable`,
//! `exit`, with IOS-XE's unique-prefix abbreviations (`sh ver`) and its error
//! forms (`% Invalid input detected at '^' marker.`, `% Incomplete command.`,
//! `% Ambiguous command: "<cmd>"`). Output lines end in `\n`; the SSH server
//! turns them into CRLF.

use crate::device::{Device, DeviceSnapshot, InstallState};

/// One exec session's state.
#[derive(Debug, Clone)]
pub struct CliSession {
    /// Privileged exec (`#`) rather than user exec (`>`).
    pub privileged: bool,
    /// The `enable` secret; `None`: `enable` is refused.
    pub enable_secret: Option<String>,
    /// `terminal length` (0: no paging).
    pub term_length: u32,
    /// `terminal width` (0: unlimited).
    pub term_width: u32,
    /// An `enable` is waiting for its password.
    awaiting_password: bool,
    /// Wrong enable passwords so far in this attempt.
    bad_passwords: u32,
}

/// What the shell should do after a line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Print this (possibly empty) text, then the prompt.
    Output(String),
    /// Print `Password: ` and read a line without echo.
    Password,
    /// End the session.
    Exit,
}

impl CliSession {
    /// A session that starts at `privileged` (privilege 15 users land at `#`).
    pub fn new(privileged: bool, enable_secret: Option<String>) -> Self {
        Self {
            privileged,
            enable_secret,
            term_length: 24,
            term_width: 80,
            awaiting_password: false,
            bad_passwords: 0,
        }
    }

    /// The prompt for `hostname`: `hostname#` or `hostname>`.
    pub fn prompt(&self, hostname: &str) -> String {
        format!("{hostname}{}", if self.privileged { '#' } else { '>' })
    }

    /// Whether the next line is an enable password (not echoed).
    pub fn awaiting_password(&self) -> bool {
        self.awaiting_password
    }

    /// Runs one input line.
    pub fn run(&mut self, device: &Device, line: &str) -> Reply {
        if self.awaiting_password {
            self.awaiting_password = false;
            if self.enable_secret.as_deref() == Some(line.trim_end_matches(['\r', '\n'])) {
                self.privileged = true;
                self.bad_passwords = 0;
                return Reply::Output(String::new());
            }
            self.bad_passwords += 1;
            if self.bad_passwords < 3 {
                self.awaiting_password = true;
                return Reply::Password;
            }
            self.bad_passwords = 0;
            return Reply::Output("% Bad secrets\n\n".into());
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.is_empty() {
            return Reply::Output(String::new());
        }
        match self.dispatch(device, line, &words) {
            Ok(r) => r,
            Err(e) => Reply::Output(e.render(line, self, device)),
        }
    }

    fn dispatch(&mut self, device: &Device, line: &str, words: &[&str]) -> Result<Reply, CliError> {
        let mut top = vec!["show", "terminal", "enable", "disable", "exit", "logout"];
        if self.privileged {
            top.push("dir");
        }
        let first = pick(&top, words[0], 0, line)?;
        match first {
            "exit" | "logout" => {
                extra(words, 1, line)?;
                Ok(Reply::Exit)
            }
            "disable" => {
                extra(words, 1, line)?;
                self.privileged = false;
                Ok(Reply::Output(String::new()))
            }
            "enable" => {
                extra(words, 1, line)?;
                if self.privileged {
                    return Ok(Reply::Output(String::new()));
                }
                if self.enable_secret.is_none() {
                    return Ok(Reply::Output("% No password set\n".into()));
                }
                self.awaiting_password = true;
                Ok(Reply::Password)
            }
            "terminal" => {
                let sub = pick(&["length", "width"], need(words, 1)?, 1, line)?;
                let n: u32 = need(words, 2)?
                    .parse()
                    .map_err(|_| CliError::Invalid(word_offset(line, 2)))?;
                extra(words, 3, line)?;
                if n > 512 || (sub == "width" && n != 0 && n < 40) {
                    return Err(CliError::Invalid(word_offset(line, 2)));
                }
                if sub == "length" {
                    self.term_length = n;
                } else {
                    self.term_width = n;
                }
                Ok(Reply::Output(String::new()))
            }
            "dir" => {
                let fs = match words.get(1) {
                    None => "flash:".to_owned(),
                    Some(w) => {
                        let fs = device
                            .snapshot()
                            .filesystems
                            .iter()
                            .map(|f| f.name.clone())
                            .find(|n| n.eq_ignore_ascii_case(w));
                        fs.ok_or(CliError::Invalid(word_offset(line, 1)))?
                    }
                };
                extra(words, 2, line)?;
                Ok(Reply::Output(render_dir(device, &fs)))
            }
            "show" => self.show(device, line, words),
            _ => unreachable!("pick returns one of the listed words"),
        }
    }

    fn show(&mut self, device: &Device, line: &str, words: &[&str]) -> Result<Reply, CliError> {
        let mut subs = vec!["version", "clock", "processes", "boot", "install"];
        if self.privileged {
            subs.push("running-config");
            subs.push("monitor");
        }
        let sub = pick(&subs, need(words, 1)?, 1, line)?;
        let snap = device.snapshot();
        let now = device.now_ns();
        let out = match sub {
            "version" => {
                extra(words, 2, line)?;
                render_version(&snap, now)
            }
            "clock" => {
                extra(words, 2, line)?;
                format!("*{}\n", clock_text(now))
            }
            "boot" => {
                extra(words, 2, line)?;
                render_boot(&snap)
            }
            "running-config" => {
                extra(words, 2, line)?;
                running_config(&snap)
            }
            "install" => {
                pick(&["summary"], need(words, 2)?, 2, line)?;
                extra(words, 3, line)?;
                render_install_summary(&snap)
            }
            "processes" => {
                pick(&["cpu"], need(words, 2)?, 2, line)?;
                extra(words, 3, line)?;
                render_processes_cpu(&snap, now)
            }
            "monitor" => {
                pick(&["capture"], need(words, 2)?, 2, line)?;
                let name = need(words, 3)?;
                pick(&["buffer"], need(words, 4)?, 4, line)?;
                pick(&["dump"], need(words, 5)?, 5, line)?;
                extra(words, 6, line)?;
                match snap.captures.get(name) {
                    Some(size) => render_capture_dump(name, *size),
                    None => format!("% Capture point {name} does not exist\n"),
                }
            }
            _ => unreachable!("pick returns one of the listed words"),
        };
        Ok(Reply::Output(out))
    }
}

/// A command error; rendered the way IOS-XE prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum CliError {
    /// `% Invalid input detected at '^' marker.`, with the caret under the
    /// byte offset of the bad word.
    Invalid(usize),
    /// `% Incomplete command.`
    Incomplete,
    /// `% Ambiguous command:  "<line>"`
    Ambiguous,
}

impl CliError {
    fn render(&self, line: &str, s: &CliSession, device: &Device) -> String {
        match self {
            CliError::Invalid(at) => {
                // The caret sits under the bad word, counted from the start
                // of the prompt that preceded the echoed line.
                let pad = s.prompt(&device.snapshot().hostname).len() + at;
                format!(
                    "{}^\n% Invalid input detected at '^' marker.\n\n",
                    " ".repeat(pad)
                )
            }
            CliError::Incomplete => "% Incomplete command.\n\n".into(),
            CliError::Ambiguous => format!("% Ambiguous command:  \"{}\"\n", line.trim()),
        }
    }
}

/// The keyword `word` abbreviates (unique prefix, case-insensitive).
fn pick<'a>(
    options: &[&'a str],
    word: &str,
    index: usize,
    line: &str,
) -> Result<&'a str, CliError> {
    let w = word.to_ascii_lowercase();
    if let Some(exact) = options.iter().find(|o| **o == w) {
        return Ok(exact);
    }
    let hits: Vec<&&str> = options.iter().filter(|o| o.starts_with(&w)).collect();
    match hits.len() {
        1 => Ok(hits[0]),
        0 => Err(CliError::Invalid(word_offset(line, index))),
        _ => Err(CliError::Ambiguous),
    }
}

fn need<'a>(words: &[&'a str], i: usize) -> Result<&'a str, CliError> {
    words.get(i).copied().ok_or(CliError::Incomplete)
}

fn extra(words: &[&str], from: usize, line: &str) -> Result<(), CliError> {
    if words.len() > from {
        Err(CliError::Invalid(word_offset(line, from)))
    } else {
        Ok(())
    }
}

/// Byte offset of the `i`-th whitespace-separated word in `line`.
fn word_offset(line: &str, i: usize) -> usize {
    let mut n = 0;
    let mut in_word = false;
    for (at, c) in line.char_indices() {
        if c.is_whitespace() {
            in_word = false;
        } else if !in_word {
            if n == i {
                return at;
            }
            n += 1;
            in_word = true;
        }
    }
    line.len()
}

/// `17.18.02.0.4112.1766116039` -> `17.18.02`.
pub fn short_version(full: &str) -> String {
    full.split('.').take(3).collect::<Vec<_>>().join(".")
}

/// `17.18.02.0.4112` -> `17.18.2` (IOS's dotted form without leading zeros
/// in the third part).
fn ios_version(full: &str) -> String {
    let mut parts: Vec<String> = full.split('.').take(3).map(str::to_owned).collect();
    if let Some(last) = parts.get_mut(2) {
        let digits = last.trim_start_matches('0');
        *last = if digits.starts_with(|c: char| c.is_ascii_digit()) {
            digits.into()
        } else {
            format!("0{digits}")
        };
    }
    parts.join(".")
}

/// `2 weeks, 3 days, 4 hours, 5 minutes` (IOS leaves out leading zero units).
pub fn uptime_text(secs: u64) -> String {
    let weeks = secs / (7 * 86_400);
    let days = secs / 86_400 % 7;
    let hours = secs / 3600 % 24;
    let minutes = secs / 60 % 60;
    let unit = |n: u64, u: &str| format!("{n} {u}{}", if n == 1 { "" } else { "s" });
    let mut parts = Vec::new();
    if weeks > 0 {
        parts.push(unit(weeks, "week"));
    }
    if weeks > 0 || days > 0 {
        parts.push(unit(days, "day"));
    }
    if weeks > 0 || days > 0 || hours > 0 {
        parts.push(unit(hours, "hour"));
    }
    parts.push(unit(minutes, "minute"));
    parts.join(", ")
}

/// Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];
const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];

/// `12:34:56.789 UTC Thu Dec 3 2026` (the `show clock` form).
pub fn clock_text(ns: u64) -> String {
    let secs = (ns / 1_000_000_000) as i64;
    let ms = ns / 1_000_000 % 1000;
    let days = secs.div_euclid(86_400);
    let tod = secs.rem_euclid(86_400);
    let (y, m, d) = civil(days);
    format!(
        "{:02}:{:02}:{:02}.{ms:03} UTC {} {} {d} {y}",
        tod / 3600,
        tod / 60 % 60,
        tod % 60,
        WEEKDAYS[days.rem_euclid(7) as usize],
        MONTHS[(m - 1) as usize],
    )
}

/// `Dec 3 2026 12:34:56 +00:00` (the `dir` date form).
fn dir_date(ns: u64) -> String {
    let secs = (ns / 1_000_000_000) as i64;
    let (y, m, d) = civil(secs.div_euclid(86_400));
    let tod = secs.rem_euclid(86_400);
    format!(
        "{} {d:>2} {y} {:02}:{:02}:{:02} +00:00",
        MONTHS[(m - 1) as usize],
        tod / 3600,
        tod / 60 % 60,
        tod % 60
    )
}

fn render_version(s: &DeviceSnapshot, now_ns: u64) -> String {
    let short = short_version(&s.running_version);
    let ios = ios_version(&s.running_version);
    let uptime = uptime_text(now_ns.saturating_sub(s.boot_time_ns) / 1_000_000_000);
    format!(
        "Cisco IOS XE Software, Version {short}\n\
         Cisco IOS Software [IOSXE], Catalyst L3 Switch Software (CAT9K_IOSXE), Version {ios}, RELEASE SOFTWARE (fc1)\n\
         Technical Support: http://www.cisco.com/techsupport\n\
         Copyright (c) 1986-2026 by Cisco Systems, Inc.\n\
         Compiled by mcpre\n\
         \n\
         \n\
         ROM: IOS-XE ROMMON\n\
         BOOTLDR: System Bootstrap, Version {short}, RELEASE SOFTWARE (P)\n\
         \n\
         {host} uptime is {uptime}\n\
         Uptime for this control processor is {uptime}\n\
         System returned to ROM by Reload Command\n\
         System image file is \"flash:packages.conf\"\n\
         Last reload reason: Reload Command\n\
         \n\
         cisco {model} (X86) processor with 1338934K/6147K bytes of memory.\n\
         Processor board ID {serial}\n\
         1 Virtual Ethernet interface\n\
         28 Gigabit Ethernet interfaces\n\
         8 Ten Gigabit Ethernet interfaces\n\
         2048K bytes of non-volatile configuration memory.\n\
         8388608K bytes of physical memory.\n\
         \n\
         Switch Ports Model              SW Version        SW Image              Mode\n\
         ------ ----- -----              ----------        ----------            ----\n\
         *    1 41    {model:<18} {short:<17} CAT9K_IOSXE           INSTALL\n\
         \n\
         Model Number                       : {model}\n\
         System Serial Number               : {serial}\n\
         \n\
         Configuration register is 0x102\n\
         \n",
        host = s.hostname,
        model = s.model,
        serial = s.serial,
    )
}

fn render_boot(s: &DeviceSnapshot) -> String {
    let manual = "no";
    format!(
        "---------------------------\n\
         Switch 1\n\
         ---------------------------\n\
         Current Boot Variables:\n\
         BOOT variable = flash:packages.conf;\n\
         \n\
         Boot Variables on next reload:\n\
         BOOT variable = flash:packages.conf;\n\
         Manual Boot = {manual}\n\
         Enable Break = no\n\
         Boot Mode = DEVICE\n\
         iPXE Timeout = 0\n\
         {}",
        match &s.boot_version {
            Some(v) => format!("Next boot image version = {}\n", short_version(v)),
            None => String::new(),
        }
    )
}

fn render_install_summary(s: &DeviceSnapshot) -> String {
    let mut out = String::from(
        "[ Switch 1 ] Installed Package(s) Information:\n\
         State (St): I - Inactive, U - Activated & Uncommitted,\n\
         \x20           C - Activated & Committed, D - Deactivated & Uncommitted\n\
         --------------------------------------------------------------------------------\n\
         Type  St   Filename/Version\n\
         --------------------------------------------------------------------------------\n",
    );
    let running_state = match s.install_state {
        InstallState::Committed => "C",
        InstallState::Uncommitted | InstallState::InProgress => {
            if s.committed {
                "C"
            } else {
                "U"
            }
        }
    };
    out.push_str(&format!("IMG   {running_state}    {}\n", s.running_version));
    for st in &s.staged {
        if st.version != s.running_version {
            out.push_str(&format!("IMG   I    {}\n", st.version));
        }
    }
    out.push_str(
        "\n--------------------------------------------------------------------------------\n",
    );
    out.push_str(&format!(
        "Auto abort timer: {}\n",
        if running_state == "U" {
            "active on install_activate, time before rollback - 06:00:00"
        } else {
            "inactive"
        }
    ));
    out.push_str(
        "--------------------------------------------------------------------------------\n\n",
    );
    out
}

/// `show running-config` as the device prints it (the CLI and anyone who
/// needs the exact text, such as a config-diff baseline).
pub fn running_config(s: &DeviceSnapshot) -> String {
    let body = format!(
        "!\n\
         ! Last configuration change at {clock}\n\
         !\n\
         version {major}\n\
         service timestamps debug datetime msec\n\
         service timestamps log datetime msec\n\
         service password-encryption\n\
         platform punt-keepalive disable-kernel-core\n\
         !\n\
         hostname {host}\n\
         !\n\
         vrf definition Mgmt-vrf\n\
         \x20!\n\
         \x20address-family ipv4\n\
         \x20exit-address-family\n\
         !\n\
         no aaa new-model\n\
         switch 1 provision {model_lower}\n\
         !\n\
         license boot level network-advantage addon dna-advantage\n\
         !\n\
         diagnostic bootup level minimal\n\
         !\n\
         spanning-tree mode rapid-pvst\n\
         spanning-tree extend system-id\n\
         !\n\
         username admin privilege 15 secret 9 $9$sim$REDACTEDBYSIMULATOR\n\
         !\n\
         redundancy\n\
         \x20mode sso\n\
         !\n\
         interface GigabitEthernet0/0\n\
         \x20vrf forwarding Mgmt-vrf\n\
         \x20ip address dhcp\n\
         \x20negotiation auto\n\
         !\n\
         interface GigabitEthernet1/0/1\n\
         !\n\
         interface GigabitEthernet1/0/2\n\
         !\n\
         interface Vlan1\n\
         \x20no ip address\n\
         \x20shutdown\n\
         !\n\
         ip forward-protocol nd\n\
         ip http server\n\
         ip http secure-server\n\
         !\n\
         gnxi\n\
         gnxi server\n\
         !\n\
         line con 0\n\
         \x20stopbits 1\n\
         line vty 0 4\n\
         \x20login local\n\
         \x20transport input ssh\n\
         !\n\
         end\n",
        clock = clock_text(s.boot_time_ns),
        major = short_version(&s.running_version)
            .split('.')
            .take(2)
            .collect::<Vec<_>>()
            .join("."),
        host = s.hostname,
        model_lower = s.model.to_ascii_lowercase(),
    );
    format!(
        "Building configuration...\n\nCurrent configuration : {} bytes\n{body}\n",
        body.len()
    )
}

fn render_processes_cpu(s: &DeviceSnapshot, now_ns: u64) -> String {
    let mut out = String::from(
        "CPU utilization for five seconds: 2%/0%; one minute: 2%; five minutes: 2%\n\
         \x20PID Runtime(ms)     Invoked      uSecs   5Sec   1Min   5Min TTY Process \n",
    );
    for p in &s.processes {
        let runtime_ms = now_ns.saturating_sub(p.started_ns) / 1_000_000 / 1000;
        let invoked = runtime_ms / 10 + 1;
        out.push_str(&format!(
            "{:>4} {:>11} {:>11} {:>10}  0.00%  0.00%  0.00%   0 {}\n",
            p.pid,
            runtime_ms,
            invoked,
            runtime_ms * 1000 / invoked,
            p.name
        ));
    }
    out
}

/// `show monitor capture <name> buffer dump`: 64-byte frames in IOS-XE's
/// hex-and-ASCII dump form, deterministic from the name, until the output
/// reaches about `size` bytes.
fn render_capture_dump(name: &str, size: u64) -> String {
    let mut out =
        String::from("Starting the packet display ........ Press Ctrl + Shift + 6 to exit\n\n");
    let seed = name
        .bytes()
        .fold(7u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)));
    let mut n = 0u32;
    while (out.len() as u64) < size {
        out.push_str(&format!("  {n}\n"));
        for row in 0..4u32 {
            let bytes: Vec<u8> = (0..16u32)
                .map(|i| {
                    let x = seed
                        .wrapping_add(n.wrapping_mul(2654435761))
                        .wrapping_add(row * 16 + i)
                        .wrapping_mul(2246822519);
                    (x >> 24) as u8
                })
                .collect();
            let hex: Vec<String> = bytes.iter().map(|b| format!("{b:02x}")).collect();
            let ascii: String = bytes
                .iter()
                .map(|b| {
                    if b.is_ascii_graphic() {
                        *b as char
                    } else {
                        '.'
                    }
                })
                .collect();
            out.push_str(&format!("{:04x}   {}   {ascii}\n", row * 16, hex.join(" ")));
        }
        out.push('\n');
        n += 1;
    }
    out
}

fn render_dir(device: &Device, fs: &str) -> String {
    let snap = device.snapshot();
    let info = snap.filesystems.iter().find(|f| f.name == fs);
    let mut out = format!("Directory of {fs}/\n\n");
    let entries = device.stat(fs).unwrap_or_default();
    for (i, e) in entries.iter().enumerate() {
        let name = e.path.strip_prefix(fs).unwrap_or(&e.path);
        let name = name.trim_start_matches('/');
        let perm = if e.permissions / 100 % 10 >= 6 {
            "-rw-"
        } else {
            "-r--"
        };
        out.push_str(&format!(
            "{:>7}  {perm} {:>12}  {}  {name}\n",
            i + 1,
            e.size,
            dir_date(e.mtime_ns)
        ));
    }
    if let Some(info) = info {
        out.push_str(&format!(
            "\n{} bytes total ({} bytes free)\n",
            info.size, info.free
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uptime_and_clock_forms() {
        assert_eq!(uptime_text(59), "0 minutes");
        assert_eq!(uptime_text(3 * 60), "3 minutes");
        assert_eq!(uptime_text(3600 + 60), "1 hour, 1 minute");
        assert_eq!(
            uptime_text(2 * 7 * 86_400 + 3 * 86_400 + 4 * 3600 + 5 * 60),
            "2 weeks, 3 days, 4 hours, 5 minutes"
        );
        // 2026-12-03T11:43:24.5Z is a Thursday.
        assert_eq!(
            clock_text(1_796_298_204_500_000_000),
            "11:43:24.500 UTC Thu Dec 3 2026"
        );
        assert_eq!(clock_text(0), "00:00:00.000 UTC Thu Jan 1 1970");
    }

    #[test]
    fn versions() {
        assert_eq!(short_version("17.18.02.0.4112.1766116039"), "17.18.02");
        assert_eq!(ios_version("17.18.02.0.4112.1766116039"), "17.18.2");
        assert_eq!(ios_version("17.09.00a"), "17.09.0a");
    }

    #[test]
    fn word_offsets_and_prefixes() {
        assert_eq!(word_offset("show  versoin", 1), 6);
        assert_eq!(word_offset("show", 1), 4);
        assert_eq!(
            pick(&["version", "vlan"], "ver", 1, "sh ver"),
            Ok("version")
        );
        assert_eq!(
            pick(&["version", "vlan"], "v", 1, "sh v"),
            Err(CliError::Ambiguous)
        );
        assert_eq!(
            pick(&["version"], "bogus", 1, "show bogus"),
            Err(CliError::Invalid(5))
        );
    }
}
