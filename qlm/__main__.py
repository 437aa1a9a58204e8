from qlm.cli import main

main()
