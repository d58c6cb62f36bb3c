use std::io::Write;

fn main() -> std::io::Result<()> {
    writeln!(std::io::stdout(), "catbird-mls {}", catbird_mls::VERSION)
}
