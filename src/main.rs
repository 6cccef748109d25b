fn main() -> std::process::ExitCode {
    mpinfer_launcher::main()
}
