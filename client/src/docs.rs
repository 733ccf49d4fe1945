//! Man pages and shell completions generated from the command line
//! definition (`hostctl generate-docs DIR`, run by `make install`): what the
//! `--help` texts say is what the man pages and completions say.

use std::path::Path;

use clap::CommandFactory;
use clap_complete::Shell;

use crate::cli::Cli;

/// Write `DIR/man1/hostctl.1` and one `hostctl-<verb>.1` per verb, and
/// `DIR/completions/` for bash (`hostctl`), zsh (`_hostctl`) and fish
/// (`hostctl.fish`), under the names their shells look for.
pub fn generate(dir: &Path) -> std::io::Result<()> {
    let man = dir.join("man1");
    std::fs::create_dir_all(&man)?;
    clap_mangen::generate_to(Cli::command(), &man)?;
    let completions = dir.join("completions");
    std::fs::create_dir_all(&completions)?;
    for (shell, name) in [(Shell::Bash, "hostctl"), (Shell::Zsh, "_hostctl"), (Shell::Fish, "hostctl.fish")] {
        let mut text = Vec::new();
        clap_complete::generate(shell, &mut Cli::command(), "hostctl", &mut text);
        std::fs::write(completions.join(name), text)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_verb_gets_a_man_page_and_every_shell_its_completion() {
        let dir = std::env::temp_dir().join(format!("hostctl-docs-{}", std::process::id()));
        generate(&dir).unwrap();
        let mut pages: Vec<String> = std::fs::read_dir(dir.join("man1"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        pages.sort();
        let verbs: Vec<String> = Cli::command()
            .get_subcommands()
            .filter(|c| !c.is_hide_set())
            .map(|c| format!("hostctl-{}.1", c.get_name()))
            .collect();
        for page in verbs.iter().chain(std::iter::once(&"hostctl.1".to_string())) {
            assert!(pages.contains(page), "{page} missing from {pages:?}");
        }
        assert!(!pages.iter().any(|p| p.contains("generate-docs")), "the hidden verb has no page: {pages:?}");
        let status = std::fs::read_to_string(dir.join("man1/hostctl-status.1")).unwrap();
        assert!(status.contains("format\\-version"), "{status}");
        let bash = std::fs::read_to_string(dir.join("completions/hostctl")).unwrap();
        assert!(bash.contains("humanreadable") && bash.contains("watch"), "{bash}");
        assert!(std::fs::read_to_string(dir.join("completions/_hostctl")).unwrap().starts_with("#compdef hostctl"));
        assert!(std::fs::read_to_string(dir.join("completions/hostctl.fish")).unwrap().contains("complete -c hostctl"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
