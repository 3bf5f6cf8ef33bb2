from tgraph.cli import main

main()
