/*
 * Test fixture for the kernel checks: exports a real dma-buf and holds it while another command runs.
 *
 *   vgem-export NAME SIZE -- COMMAND ARGS...
 *
 * Finds the DRM card driven by vgem, creates a dumb buffer of SIZE bytes (rounded up by the driver), exports it as a
 * dma-buf fd (DRM PRIME), names it NAME (DMA_BUF_SET_NAME), maps it and checks a pattern written through the mapping
 * inside DMA_BUF_IOCTL_SYNC brackets. It then prints one line
 *
 *   vgem-export: pid=P fd=F size=S name=NAME
 *
 * runs COMMAND while holding the fd and exits with COMMAND's exit code. With VGEM_EXPORT_INHERIT=1 in the
 * environment, COMMAND inherits the fd too (two holders of one buffer). With VGEM_EXPORT_MAP_ONLY=1 the fd (and the
 * GEM handle's card) is closed before COMMAND runs and only the mapping holds the buffer; the line then says fd=-1. Exit 3 when no vgem card exists, 4 when a
 * step on the buffer fails.
 *
 * The DRM uapi structs are declared here so that building needs only the C library and the kernel's
 * linux/ headers, not libdrm.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/dma-buf.h>
#include <linux/ioctl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

struct fixture_drm_version {
	int version_major;
	int version_minor;
	int version_patchlevel;
	size_t name_len;
	char *name;
	size_t date_len;
	char *date;
	size_t desc_len;
	char *desc;
};

struct fixture_drm_create_dumb {
	uint32_t height;
	uint32_t width;
	uint32_t bpp;
	uint32_t flags;
	uint32_t handle;
	uint32_t pitch;
	uint64_t size;
};

struct fixture_drm_prime_handle {
	uint32_t handle;
	uint32_t flags;
	int32_t fd;
};

#define FIXTURE_DRM_IOCTL_VERSION _IOWR('d', 0x00, struct fixture_drm_version)
#define FIXTURE_DRM_IOCTL_PRIME_HANDLE_TO_FD _IOWR('d', 0x2d, struct fixture_drm_prime_handle)
#define FIXTURE_DRM_IOCTL_MODE_CREATE_DUMB _IOWR('d', 0xB2, struct fixture_drm_create_dumb)

static int fail(const char *what)
{
	fprintf(stderr, "vgem-export: %s: %s\n", what, strerror(errno));
	return 4;
}

/* Returns an fd of the first /dev/dri/card* whose driver calls itself "vgem", or -1. */
static int open_vgem(void)
{
	DIR *dir = opendir("/dev/dri");
	struct dirent *e;
	int found = -1;

	if (!dir)
		return -1;
	while (found < 0 && (e = readdir(dir)) != NULL) {
		char path[300], name[64] = { 0 };
		struct fixture_drm_version v = { 0 };
		int fd;

		if (strncmp(e->d_name, "card", 4) != 0)
			continue;
		snprintf(path, sizeof(path), "/dev/dri/%s", e->d_name);
		fd = open(path, O_RDWR | O_CLOEXEC);
		if (fd < 0)
			continue;
		v.name = name;
		v.name_len = sizeof(name) - 1;
		if (ioctl(fd, FIXTURE_DRM_IOCTL_VERSION, &v) == 0 && strcmp(name, "vgem") == 0)
			found = fd;
		else
			close(fd);
	}
	closedir(dir);
	return found;
}

int main(int argc, char **argv)
{
	struct fixture_drm_create_dumb dumb = { 0 };
	struct fixture_drm_prime_handle prime = { 0 };
	struct dma_buf_sync sync = { 0 };
	const char *name;
	unsigned long long want;
	unsigned char *map;
	int card, status, inherit, map_only;
	pid_t child;

	if (argc < 5 || strcmp(argv[3], "--") != 0) {
		fprintf(stderr, "usage: vgem-export NAME SIZE -- COMMAND ARGS...\n");
		return 2;
	}
	name = argv[1];
	want = strtoull(argv[2], NULL, 0);
	inherit = getenv("VGEM_EXPORT_INHERIT") && strcmp(getenv("VGEM_EXPORT_INHERIT"), "1") == 0;
	map_only = getenv("VGEM_EXPORT_MAP_ONLY") && strcmp(getenv("VGEM_EXPORT_MAP_ONLY"), "1") == 0;

	card = open_vgem();
	if (card < 0) {
		fprintf(stderr, "vgem-export: no /dev/dri/card* driven by vgem (is the vgem module loaded?)\n");
		return 3;
	}

	/* A 32 bpp buffer one page wide: height rows of 4096 bytes. */
	dumb.width = 1024;
	dumb.bpp = 32;
	dumb.height = (uint32_t)((want + 4095) / 4096);
	if (ioctl(card, FIXTURE_DRM_IOCTL_MODE_CREATE_DUMB, &dumb) != 0)
		return fail("DRM_IOCTL_MODE_CREATE_DUMB");

	prime.handle = dumb.handle;
	prime.flags = O_RDWR | (inherit ? 0 : O_CLOEXEC);
	if (ioctl(card, FIXTURE_DRM_IOCTL_PRIME_HANDLE_TO_FD, &prime) != 0)
		return fail("DRM_IOCTL_PRIME_HANDLE_TO_FD");

	if (ioctl(prime.fd, DMA_BUF_SET_NAME, name) != 0)
		return fail("DMA_BUF_SET_NAME");

	map = mmap(NULL, dumb.size, PROT_READ | PROT_WRITE, MAP_SHARED, prime.fd, 0);
	if (map == MAP_FAILED)
		return fail("mmap of the dma-buf");
	sync.flags = DMA_BUF_SYNC_START | DMA_BUF_SYNC_RW;
	if (ioctl(prime.fd, DMA_BUF_IOCTL_SYNC, &sync) != 0)
		return fail("DMA_BUF_IOCTL_SYNC start");
	for (uint64_t i = 0; i < dumb.size; i++)
		map[i] = (unsigned char)(i * 7 + 1);
	for (uint64_t i = 0; i < dumb.size; i++) {
		if (map[i] != (unsigned char)(i * 7 + 1)) {
			fprintf(stderr, "vgem-export: byte %llu read back wrong through the mapping\n", (unsigned long long)i);
			return 4;
		}
	}
	sync.flags = DMA_BUF_SYNC_END | DMA_BUF_SYNC_RW;
	if (ioctl(prime.fd, DMA_BUF_IOCTL_SYNC, &sync) != 0)
		return fail("DMA_BUF_IOCTL_SYNC end");

	if (map_only) {
		close(prime.fd);
		close(card);
		prime.fd = -1;
		card = -1;
	}
	printf("vgem-export: pid=%d fd=%d size=%llu name=%s\n", (int)getpid(), prime.fd, (unsigned long long)dumb.size, name);
	fflush(stdout);

	child = fork();
	if (child < 0)
		return fail("fork");
	if (child == 0) {
		execvp(argv[4], argv + 4);
		fprintf(stderr, "vgem-export: cannot run %s: %s\n", argv[4], strerror(errno));
		_exit(127);
	}
	if (waitpid(child, &status, 0) < 0)
		return fail("waitpid");

	munmap(map, dumb.size);
	if (prime.fd >= 0)
		close(prime.fd);
	if (card >= 0)
		close(card);
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}
