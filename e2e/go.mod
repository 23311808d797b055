module shoal/e2e

go 1.26.8

require (
	github.com/anishathalye/porcupine v1.3.1 // indirect
	shoal/proto v0.0.0
	shoal/services v0.0.0
	shoal/shared v0.0.0
)

replace shoal/proto => ../proto

replace shoal/shared => ../shared

replace shoal/services => ../services
