from aimbench.cli import main

main()
