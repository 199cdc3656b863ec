from nemic.cli import main

main()
