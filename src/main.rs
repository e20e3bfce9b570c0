use clap::Parser;

fn main() {
    let cli = batchscore::cli::Cli::parse();
    batchscore::cli::init_logging(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    let result = runtime.block_on(batchscore::cli::run(cli));
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(batchscore::cli::exit_code(&e));
    }
}
