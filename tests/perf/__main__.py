from tests.perf.bench import main

main()
