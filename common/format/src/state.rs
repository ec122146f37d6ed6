//! The run-control state machine every process runs (artdaq's App states).
//!
//! ```text
//! Booted --init--> Ready --start--> Running <--pause/resume--> Paused
//!   ^                |  ^              |                          |
//!   +---shutdown-----+  +-----stop-----+--------------------------+
//! Error (an internal failure during a run) accepts stop and shutdown.
//! ```
//! `init` is also legal in Ready (re-configure without restarting).

use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum State {
    Booted,
    Ready,
    Running,
    Paused,
    Error,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Command {
    Init,
    Start,
    Pause,
    Resume,
    Stop,
    Shutdown,
}

/// A command that is not legal in the current state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("command {command} is illegal in state {state}; legal commands: {}", list(.legal))]
pub struct IllegalCommand {
    pub state: State,
    pub command: Command,
    pub legal: &'static [Command],
}

fn list(cmds: &[Command]) -> String {
    cmds.iter()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

impl State {
    pub const ALL: [State; 5] = [
        State::Booted,
        State::Ready,
        State::Running,
        State::Paused,
        State::Error,
    ];

    /// The commands accepted in this state.
    pub fn legal_commands(self) -> &'static [Command] {
        use Command::*;
        match self {
            State::Booted => &[Init, Shutdown],
            State::Ready => &[Init, Start, Shutdown],
            State::Running => &[Pause, Stop],
            State::Paused => &[Resume, Stop],
            State::Error => &[Stop, Shutdown],
        }
    }

    /// The state a successful `command` leads to, or why it is illegal.
    pub fn next(self, command: Command) -> Result<State, IllegalCommand> {
        use Command::*;
        let next = match (self, command) {
            (State::Booted | State::Ready, Init) => State::Ready,
            (State::Ready, Start) => State::Running,
            (State::Running, Pause) => State::Paused,
            (State::Paused, Resume) => State::Running,
            (State::Running | State::Paused | State::Error, Stop) => State::Ready,
            (State::Booted | State::Ready | State::Error, Shutdown) => State::Booted,
            _ => {
                return Err(IllegalCommand {
                    state: self,
                    command,
                    legal: self.legal_commands(),
                });
            }
        };
        Ok(next)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            State::Booted => "booted",
            State::Ready => "ready",
            State::Running => "running",
            State::Paused => "paused",
            State::Error => "error",
        }
    }
}

impl Command {
    pub const ALL: [Command; 6] = [
        Command::Init,
        Command::Start,
        Command::Pause,
        Command::Resume,
        Command::Stop,
        Command::Shutdown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Command::Init => "init",
            Command::Start => "start",
            Command::Pause => "pause",
            Command::Resume => "resume",
            Command::Stop => "stop",
            Command::Shutdown => "shutdown",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Command::*;
    use State::*;

    /// The whole transition table, written out once: (state, command) -> next.
    const LEGAL: &[(State, Command, State)] = &[
        (Booted, Init, Ready),
        (Booted, Shutdown, Booted),
        (Ready, Init, Ready),
        (Ready, Start, Running),
        (Ready, Shutdown, Booted),
        (Running, Pause, Paused),
        (Running, Stop, Ready),
        (Paused, Resume, Running),
        (Paused, Stop, Ready),
        (Error, Stop, Ready),
        (Error, Shutdown, Booted),
    ];

    #[test]
    fn every_legal_transition_leads_where_the_table_says() {
        for &(s, c, n) in LEGAL {
            assert_eq!(s.next(c), Ok(n), "{s} --{c}-->");
        }
    }

    #[test]
    fn every_other_pair_is_illegal_and_names_state_and_legal_commands() {
        let mut illegal = 0;
        for s in State::ALL {
            for c in Command::ALL {
                if LEGAL.iter().any(|&(ls, lc, _)| ls == s && lc == c) {
                    assert!(s.legal_commands().contains(&c));
                    continue;
                }
                illegal += 1;
                assert!(!s.legal_commands().contains(&c));
                let err = s.next(c).expect_err("illegal");
                assert_eq!(err.state, s);
                assert_eq!(err.command, c);
                let msg = err.to_string();
                assert!(
                    msg.contains(s.as_str()) && msg.contains(c.as_str()),
                    "{msg}"
                );
                for l in s.legal_commands() {
                    assert!(msg.contains(l.as_str()), "{msg}");
                }
            }
        }
        assert_eq!(illegal, 5 * 6 - LEGAL.len());
    }

    #[test]
    fn start_before_init_is_refused_with_the_legal_commands() {
        let err = Booted.next(Start).expect_err("illegal");
        assert_eq!(
            err.to_string(),
            "command start is illegal in state booted; legal commands: init, shutdown"
        );
    }
}
